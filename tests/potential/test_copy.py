"""copy.deepcopy of TorchForces and of Systems holding them never reaches the crashing plugin deserialiser."""
import copy

import numpy as np
import openmm
import pytest
import torch

from openmm_smoothflow.potential import deserializeSystem
from openmm_smoothflow.potential.torchforce import install_copy_hooks, torch_force


class Quadratic(torch.nn.Module):
    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return (positions ** 2).sum()


class ScaledQuadratic(torch.nn.Module):
    def forward(self, positions: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return scale * (positions ** 2).sum()


def energy(system, x):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)


def test_deepcopy_of_torchforce_and_system():
    import openmmtorch

    install_copy_hooks()
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.1, 100.0)
    system.addForce(bond)
    force = openmmtorch.TorchForce(torch.jit.script(ScaledQuadratic()))
    force.setForceGroup(3)
    force.addGlobalParameter("scale", 2.0)
    system.addForce(force)
    x = np.array([[0.1, 0.2, 0.3], [0.0, 0.1, 0.0], [0.5, 0.0, 0.2]])
    copied = copy.deepcopy(system)
    assert [f.getForceGroup() for f in copied.getForces()] == [0, 3]
    assert energy(copied, x) == pytest.approx(energy(system, x), rel=1e-12)
    single = copy.deepcopy(system.getForce(1))  # a generic Force proxy, as openmm-ml deep-copies it
    assert openmmtorch.TorchForce.isinstance(single) and single.getForceGroup() == 3
    assert single.getGlobalParameterName(0) == "scale" and single.getGlobalParameterDefaultValue(0) == 2.0
    assert isinstance(copy.deepcopy(bond), openmm.HarmonicBondForce)  # other forces: OpenMM's own copy


def test_deserialize_refuses_a_torchforce_inside_a_cv_force():
    system = openmm.System()
    system.addParticle(1.0)
    cv = openmm.CustomCVForce("2*q")
    cv.addCollectiveVariable("q", torch_force(torch.jit.script(Quadratic())))
    system.addForce(cv)
    with pytest.raises(ValueError, match="CustomCVForce holds a TorchForce"):
        deserializeSystem(openmm.XmlSerializer.serialize(system))
