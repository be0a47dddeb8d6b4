"""The install itself: torch, OpenMM and the openmm-torch plugin must share one libtorch ABI."""
import numpy as np
import openmm
import pytest
import torch


class _Harmonic(torch.nn.Module):
    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return 10.0 * (positions**2).sum()


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_torchforce_runs_in_a_real_context(tmp_path, platform):
    import openmmtorch

    path = tmp_path / "harmonic.pt"
    torch.jit.script(_Harmonic()).save(str(path))
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    system.addForce(openmmtorch.TorchForce(str(path)))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    x = np.array([[0.1, 0.2, 0.3], [0.0, -0.1, 0.0], [0.5, 0.0, 0.1]])
    context.setPositions(x)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    assert energy == pytest.approx(10.0 * (x**2).sum(), rel=1e-5)
    np.testing.assert_allclose(forces, -20.0 * x, rtol=1e-5, atol=1e-6)
