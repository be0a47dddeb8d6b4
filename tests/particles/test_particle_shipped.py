"""The shipped DW4 / LJ13 flows: readable exports, symmetric energies, a normalised DW4 density."""
import json
import math

import numpy as np
import pytest
import torch

from openmm_smoothflow.io import packaged
from openmm_smoothflow.particles.export import eager_flow, load_particle_model
from openmm_smoothflow.particles.md import no_fusion
from openmm_smoothflow.particles.systems import DW4, LJ13, UNITS

from particle_helpers import random_orthogonal


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_shipped_model_metadata_and_size(name):
    path = packaged(f"particles-{name}.pt")
    assert path.is_file() and path.stat().st_size < 2_000_000
    meta = json.loads(load_particle_model(path).metadata)
    system = DW4 if name == "dw4" else LJ13
    assert meta["system"] == name and meta["atom_count"] == system.n_particles
    assert meta["density"].startswith("exact log-determinant") and meta["provenance"]["n_train"] > 0
    assert np.isfinite(meta["provenance"]["test_nll"]["nll"])


def test_shipped_dw4_energy_invariant_in_openmm_units():
    module = load_particle_model(packaged("particles-dw4.pt"))
    rng = np.random.default_rng(0)
    x = DW4.to_nm(np.array([[0.0, 0.0], [2.6, 0.0], [0.0, 2.6], [2.6, 2.6]]) + 0.2 * rng.standard_normal((4, 2)))
    R = random_orthogonal(2, torch.Generator().manual_seed(1), reflect=True).numpy()
    y = x.copy()
    y[:, :2] = (x[:, :2] @ R.T + 0.5)[[2, 0, 3, 1]]
    with no_fusion():
        e1, e2 = float(module(torch.tensor(x))), float(module(torch.tensor(y)))
    assert abs(e1 - e2) < 1e-10 * max(1.0, abs(e1))
    assert 0 < e1 / UNITS.energy_kjmol < 30  # a typical configuration: NLL of a few nats


@pytest.mark.slow
def test_shipped_dw4_density_is_normalised():
    """int q = E_g[q/g] with a Gaussian proposal on the 6-dim CoM-free subspace (importance sampling)."""
    flow = eager_flow(packaged("particles-dw4.pt"))
    sigma, n = 2.5, 6000
    g = torch.Generator().manual_seed(7)
    z = torch.randn(n, 4, 2, generator=g, dtype=torch.float64) * sigma
    z = z - z.mean(1, keepdim=True)
    log_g = -0.5 * z.pow(2).sum((1, 2)) / sigma ** 2 - 0.5 * 6 * math.log(2 * math.pi * sigma ** 2)
    w = torch.exp(-flow.nll(z, batch_size=50) - log_g)
    mean, err = float(w.mean()), float(w.std() / math.sqrt(n))
    assert abs(mean - 1.0) < 3 * err + 0.1, (mean, err)
