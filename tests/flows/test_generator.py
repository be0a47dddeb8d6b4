"""The Boltzmann generator: density vs sampling consistency, normalisation, TorchScript, symmetries,
behaviour outside the support."""
import math

import pytest
import torch

from helpers import chain_topology, randomize
from openmm_smoothflow.flows.generator import BoltzmannGenerator

SMALL = dict(hidden=[16, 16], n_torsion_layers=2, n_ic_layers=2)


def small_generator(kind="smooth", topology=None, seed=0, scale=0.3, **extra):
    topology = topology if topology is not None else chain_topology(5)
    torch.manual_seed(seed)  # the conditioners' hidden layers start at PyTorch's (random) Linear init
    generator = BoltzmannGenerator.from_topology(topology, kind=kind, **{**SMALL, **extra}).double()
    return randomize(generator, scale=scale, seed=seed)


def random_rotation(seed=0):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


@pytest.mark.parametrize("kind", ["smooth", "spline", "affine"])
def test_log_prob_of_samples_equals_sampling_density(kind):
    # affine: RealNVP in logit space saturates for large random scales (clamped tails), keep it moderate
    generator = small_generator(kind, scale=0.1 if kind == "affine" else 0.3)
    x, log_q = generator.sample(64, generator=torch.Generator().manual_seed(1))
    assert x.shape == (64, 5, 3)
    torch.testing.assert_close(generator.log_prob(x), log_q, atol=1e-6, rtol=0)


def test_log_prob_of_samples_alanine_dipeptide(ala2):
    generator = randomize(BoltzmannGenerator.from_topology(ala2.topology, hidden=[32, 32]).double(), 0.1)
    x, log_q = generator.sample(16, generator=torch.Generator().manual_seed(2))
    assert x.shape == (16, 22, 3)
    torch.testing.assert_close(generator.log_prob(x), log_q, atol=1e-6, rtol=0)


def test_density_integrates_to_one_over_internal_coordinates():
    """E_{u ~ U(box)}[p_u(u)] = 1 where p_u is the flow's density carried to unit-box coordinates with
    the IC and unit-box Jacobians; an importance-sampling estimate with a uniform proposal."""
    # (a moderate perturbation: c = 1/2 and slopes k ~ 12 at params == 0 make the density peaked, and
    # the uniform proposal's variance with it)
    generator = small_generator("smooth", topology=chain_topology(5), seed=3, scale=0.15)
    g = torch.Generator().manual_seed(4)
    u = torch.rand(100_000, generator.n_dims, generator=g, dtype=torch.float64)
    nb, na = generator.n_bonds, generator.n_angles
    with torch.no_grad():
        bonds, angles, torsions, ld_box = generator.ic.unit_box.inverse(u[:, :nb], u[:, nb:nb + na], u[:, nb + na:])
        x, ld_ic = generator.ic.inverse(bonds, angles, torsions)
        p = torch.exp(generator.log_prob(x) + ld_ic + ld_box)
    estimate, stderr = float(p.mean()), float(p.std() / math.sqrt(len(p)))
    assert abs(estimate - 1.0) < 3 * stderr + 1e-3, (estimate, stderr)
    assert stderr < 0.05


@pytest.mark.parametrize("kind", ["smooth", "spline"])
def test_torchscript_energy_and_forces_match_eager(kind, ala2, ala2_positions):
    generator = randomize(BoltzmannGenerator.from_topology(ala2.topology, kind=kind, **SMALL).double(), 0.1)
    scripted = torch.jit.script(generator)
    x = (ala2_positions + 0.005 * torch.randn(4, 22, 3, dtype=torch.float64)).requires_grad_(True)
    e_eager, e_script = generator(x), scripted(x)
    torch.testing.assert_close(e_script, e_eager, atol=1e-10, rtol=1e-12)
    (f_eager,) = torch.autograd.grad(e_eager.sum(), x)
    (f_script,) = torch.autograd.grad(e_script.sum(), x)
    torch.testing.assert_close(f_script, f_eager, atol=1e-9, rtol=1e-10)


def test_energy_invariant_and_forces_equivariant_under_rigid_motion(ala2, ala2_positions):
    generator = randomize(BoltzmannGenerator.from_topology(ala2.topology, **SMALL).double(), 0.1)
    x = ala2_positions + 0.005 * torch.randn(3, 22, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    rot, shift = random_rotation(6), torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    x_moved = x @ rot.T + shift
    torch.testing.assert_close(generator.energy(x_moved), generator.energy(x), atol=1e-9, rtol=0)
    f, f_moved = generator.force(x), generator.force(x_moved)
    torch.testing.assert_close(f_moved, f @ rot.T, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(f.sum(dim=1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-8, rtol=0)
    torque = torch.linalg.cross(x, f, dim=-1).sum(dim=1)
    torch.testing.assert_close(torque, torch.zeros(3, 3, dtype=torch.float64), atol=1e-7, rtol=0)


def test_outside_support_is_finite_and_counted(ala2, ala2_positions):
    generator = randomize(BoltzmannGenerator.from_topology(ala2.topology, **SMALL).double(), 0.1)
    x = ala2_positions.repeat(3, 1, 1).clone()
    i0, i1, _ = generator.zmatrix.frame
    x[1, i1] = x[1, i0] + 3.0 * (x[1, i1] - x[1, i0])        # frame bond far past 0.3 nm
    x[2, i1] = x[2, i0] + 1e-4 * (x[2, i1] - x[2, i0])       # nearly coincident atoms
    assert generator.count_outside(x) == 2
    energy, force = generator.energy(x), generator.force(x)
    assert torch.isfinite(energy).all() and torch.isfinite(force).all()
    assert energy[1] > energy[0] + 100  # the wall pushes back


def test_collinear_angle_is_finite(ala2, ala2_positions):
    generator = randomize(BoltzmannGenerator.from_topology(ala2.topology, **SMALL).double(), 0.1)
    x = ala2_positions.clone()[None]
    i, j, k, _ = generator.zmatrix.rows[3]
    x[0, i] = x[0, j] + (x[0, j] - x[0, k]) / torch.linalg.norm(x[0, j] - x[0, k]) * 0.11  # angle i-j-k = pi
    assert torch.isfinite(generator.energy(x)).all() and torch.isfinite(generator.force(x)).all()


def test_inverted_orientation_samples_analytically_and_scores_by_root_finding():
    generator = small_generator("smooth", inverted=True)
    x, log_q = generator.sample(32, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(generator.log_prob(x), log_q, atol=1e-6, rtol=0)


def test_paper_size_parameter_counts(ala2):
    """SI-2.4: 758,168 (smooth: three 64-64 MLPs per mixture coupling layer) and 398,691 (spline)."""
    smooth = BoltzmannGenerator.from_topology(ala2.topology, kind="smooth")
    spline = BoltzmannGenerator.from_topology(ala2.topology, kind="spline").n_parameters()
    assert smooth.n_parameters() == 758_168 and spline == 398_691
    assert all(len(layer.conditioner.group_nets) == 2 for layer in smooth.layers)  # weights; slopes; a, b, c
    one_mlp = BoltzmannGenerator.from_topology(ala2.topology, kind="smooth", conditioner_groups=False)
    assert one_mlp.n_parameters() == 597_656  # the layout before: one shared MLP per layer


def test_phi_and_psi_in_different_torsion_channels(ala2):
    """The 8 torsion coupling layers condition phi on psi and back: they sit in different channels."""
    from openmm_smoothflow.flows.generator import torsion_channels
    from openmm_smoothflow.flows.zmatrix import torsion_indices

    generator = BoltzmannGenerator.from_topology(ala2.topology)
    phi, psi = torsion_indices(generator.zmatrix, ["phi", "psi"])
    first, second = torsion_channels(generator.zmatrix)
    assert sorted(first + second) == list(range(generator.zmatrix.n_torsions))
    assert (phi in first) != (psi in first) and (phi in second) != (psi in second)
    assert abs(len(first) - len(second)) <= 1
    offset = generator.n_bonds + generator.n_angles
    torsion_layers = [layer for layer in generator.layers if len(layer.cond_idx) and
                      int(layer.cond_idx.min()) >= offset and int(layer.out_idx.min()) >= offset]
    assert len(torsion_layers) == 8
    for layer in torsion_layers:  # each reads one of phi, psi and transforms the other
        cond, out = set((layer.cond_idx - offset).tolist()), set((layer.out_idx - offset).tolist())
        assert {phi, psi} & cond and {phi, psi} & out
    # the split used before (even | odd torsions) put both in one channel: this test would fail on it
    even, odd = torsion_channels(generator.zmatrix, "alternate")
    assert (phi in even) == (psi in even)


def test_models_stored_before_version_2_rebuild_as_they_were(ala2):
    """A complete config without "version" (what files written before it hold) gets the old layout."""
    from openmm_smoothflow.flows.generator import LEGACY_KEYS, default_config

    old = {key: value for key, value in default_config(beta=2).items() if key in LEGACY_KEYS}
    generator = BoltzmannGenerator.from_topology(ala2.topology, **old)
    assert generator.config["version"] == 1 and generator.n_parameters() == 597_656
    assert generator.layers[0].transform.legacy and generator.layers[0].transform.c_min == 1e-3
