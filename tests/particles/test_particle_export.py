"""Export of particle flows: one TorchScript file, energies in kJ/mol, the real TorchForce in OpenMM."""
import json

import numpy as np
import openmm
import pytest
import torch

from openmm_smoothflow.particles.export import eager_flow, export, load_particle_model
from openmm_smoothflow.particles.md import flow_system, no_fusion
from openmm_smoothflow.particles.systems import DW4, LJ13, UNITS
from openmm_smoothflow.potential import FlowPotential
from openmm_smoothflow.units import kT

from particle_helpers import random_flow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("particle-export")
    paths = {}
    for system, flow in (("dw4", random_flow(4, 2)), ("lj13", random_flow(13, 3, n_steps=1))):
        paths[system] = (d / f"{system}.pt", flow)
        export(flow, system, paths[system][0], provenance={"note": "random test flow"})
    return paths


def _positions(system, seed):
    rng = np.random.default_rng(seed)
    if system.name == "dw4":
        x = 2.0 * rng.standard_normal((4, 2))
    else:
        grid = np.stack(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3)[:13]
        x = 1.1 * grid + 0.1 * rng.standard_normal((13, 3))
    return system.to_nm(x)


@pytest.mark.parametrize("name", ["dw4", pytest.param("lj13", marks=pytest.mark.slow)])
def test_module_energy_is_kT_times_flow_nll(exported, name):
    path, flow = exported[name]
    system = DW4 if name == "dw4" else LJ13
    module = load_particle_model(path)
    meta = json.loads(module.metadata)
    assert meta["kind"] == "particle-egnn-cnf" and meta["atom_count"] == system.n_particles
    assert meta["elements"] == ["Ar"] * system.n_particles and meta["temperature"] == UNITS.temperature
    assert meta["reduced_units"]["length_nm"] == UNITS.length_nm
    pos = _positions(system, 0)
    with no_fusion():
        e = float(module(torch.tensor(pos)))
    u = float(flow(torch.tensor(system.from_nm(pos))[None]).detach())
    assert e == pytest.approx(u * kT(UNITS.temperature), rel=1e-12)
    # the eager flow rebuilt from the file is the same function
    rebuilt = eager_flow(path)
    assert float(rebuilt(torch.tensor(system.from_nm(pos))[None]).detach()) == pytest.approx(u, rel=1e-12)


@pytest.mark.parametrize("name", ["dw4", pytest.param("lj13", marks=pytest.mark.slow)])
def test_torchforce_in_openmm_equals_module(exported, name):
    path, _ = exported[name]
    system = DW4 if name == "dw4" else LJ13
    module = load_particle_model(path)
    omm_system = flow_system(system, path)
    with no_fusion():
        ctx = openmm.Context(omm_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        for seed in (1, 2):
            pos = _positions(system, seed)
            if system.dim == 2:
                pos[:, 2] = 0.3 * seed  # z is ignored by the DW4 energy
            ctx.setPositions(pos)
            state = ctx.getState(getEnergy=True, getForces=True)
            x = torch.tensor(pos, requires_grad=True)
            e = module(x)
            (g,) = torch.autograd.grad(e, x)
            assert state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole) == pytest.approx(
                float(e), rel=1e-10)
            f = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
            np.testing.assert_allclose(f, -g.numpy(), rtol=1e-8, atol=1e-8)
            if system.dim == 2:
                assert np.all(f[:, 2] == 0.0)


def test_flow_potential_reads_particle_exports(exported):
    path, _ = exported["dw4"]
    potential = FlowPotential(path)
    assert potential.temperature == UNITS.temperature
    potential.checkTopology(DW4.topology())
    with pytest.raises(ValueError, match="trained on 4 atoms"):
        potential.checkTopology(LJ13.topology())
    with pytest.raises(ValueError, match="not lj13"):
        flow_system(LJ13, path)
    with no_fusion(), pytest.raises(Exception, match="NaN or inf"):
        load_particle_model(path)(torch.full((4, 3), float("nan"), dtype=torch.float64))


def test_export_rejects_mismatched_system(tmp_path):
    with pytest.raises(ValueError, match="dw4 has 4 in 2-D"):
        export(random_flow(13, 3, n_steps=1), "dw4", tmp_path / "bad.pt")
