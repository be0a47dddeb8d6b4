"""TorchForces of smooth exports return their forces (setOutputsForces): the same energies and forces as
the energy-only TorchForce that openmm-torch differentiates, on atom subsets, in periodic boxes and
with an energy scale; and no autograd bookkeeping in the scripted pass."""
import collections
import copy
from importlib.resources import files

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from openmm_smoothflow.potential import torchforce
from openmm_smoothflow.potential.flow_potential import FlowPotential
from openmm_smoothflow.potential.torchforce import EnergyForces, has_force_pass, torch_force

MODEL = files("openmm_smoothflow") / "data" / "ala2-smooth.pt"
N_EXTRA = 3  # free particles after the molecule: the flow sees a subset


@pytest.fixture(scope="module")
def flow():
    return FlowPotential(str(MODEL))


@pytest.fixture(scope="module")
def positions():
    x = np.load(str(files("openmm_smoothflow") / "data" / "ala2-frames.npz"))["positions"][:3]
    extra = np.array([[1.0, 1.0, 1.0], [1.5, 0.2, 0.7], [0.3, 1.7, 1.2]])
    return [np.concatenate([frame, extra]) for frame in x]


def energies_and_forces(force, positions, periodic):
    system = openmm.System()
    for _ in range(len(positions[0])):
        system.addParticle(1.0)
    if periodic:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in 2.5 * np.eye(3)))
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    out = []
    for x in positions:
        shifted = x.copy()
        if periodic:
            shifted[5] += 2.5  # one atom in another periodic image: the molecule is made whole first
        context.setPositions(shifted)
        state = context.getState(getEnergy=True, getForces=True)
        out.append((state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                    state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
    return out


@pytest.mark.parametrize("periodic,scale", [(False, None), (True, None), (False, "lam"), (True, "lam")])
def test_force_pass_matches_the_differentiated_energy(flow, positions, periodic, scale, monkeypatch):
    assert has_force_pass(flow.module)
    atoms = list(range(22))
    fast = torch_force(flow.module, atoms, periodic, scale)
    assert fast.getOutputsForces()
    monkeypatch.setattr(torchforce, "has_force_pass", lambda module: False)
    slow = torch_force(flow.module, atoms, periodic, scale)
    assert not slow.getOutputsForces()
    for (e1, f1), (e2, f2) in zip(energies_and_forces(fast, positions, periodic),
                                  energies_and_forces(slow, positions, periodic)):
        assert e1 == pytest.approx(e2, rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(f1, f2, rtol=1e-9, atol=1e-8)
        assert np.all(f1[22:] == 0.0)  # the free particles feel nothing
        assert np.abs(f1[:22]).max() > 1.0


def test_force_pass_copies_and_refuses_nan(flow, positions):
    force = torch_force(flow.module)
    clone = copy.deepcopy(force)
    assert clone.getOutputsForces()
    module = torch.jit.script(EnergyForces(flow.module))
    with pytest.raises(Exception, match="NaN or inf"):
        module(torch.full((22, 3), float("nan"), dtype=torch.float64))


def test_force_pass_builds_no_differentiable_graphs(flow):
    """openmm-torch hands positions that require grad; the pass must not let the TorchScript executor
    record an autograd graph around it (which costs one detach per operation)."""
    from torch.profiler import profile

    module = torch.jit.script(EnergyForces(flow.module))
    x = torch.tensor(np.load(str(files("openmm_smoothflow") / "data" / "ala2-frames.npz"))["positions"][0],
                     dtype=torch.float64, requires_grad=True)
    for _ in range(3):  # the profiling executor optimises after its first runs
        module(x)
    with profile() as prof:
        energy, forces = module(x)
    names = collections.Counter(event.name for event in prof.events())
    assert names["aten::detach"] == 0
    assert not energy.requires_grad and not forces.requires_grad
