"""The exact DW4 / LJ13 energies: torch (reduced) against the OpenMM CustomForce Systems (kJ/mol, nm)."""
import numpy as np
import openmm
import pytest
import torch

from openmm_smoothflow.particles.systems import DW4, LJ13, UNITS, get_system
from openmm_smoothflow.units import kT


def _omm_energy_forces(system, positions_nm):
    ctx = openmm.Context(system.openmm_system(), openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions_nm)
    state = ctx.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))


def _configs(system, n, seed):
    g = torch.Generator().manual_seed(seed)
    if system.name == "dw4":
        return 2.5 * torch.randn(n, 4, 2, generator=g, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0, dtype=torch.float64)] * 3, indexing="ij"), -1)
    return 1.1 * grid.reshape(-1, 3)[:13] + 0.1 * torch.randn(n, 13, 3, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_openmm_energy_and_forces_equal_torch(name):
    system = get_system(name)
    for x in _configs(system, 3, 1):
        x = x.clone().requires_grad_(True)
        u = system.energy(x[None])[0]
        (grad,) = torch.autograd.grad(u, x)
        pos = system.to_nm(x.detach().numpy())
        if system.dim == 2:
            pos[:, 2] = np.random.default_rng(0).normal(size=4)  # z must not matter
        e, f = _omm_energy_forces(system, pos)
        assert e == pytest.approx(float(u.detach()) * kT(UNITS.temperature), rel=1e-10, abs=1e-9)
        f_ref = -grad.numpy() * kT(UNITS.temperature) / UNITS.length_nm
        np.testing.assert_allclose(f[:, : system.dim], f_ref, rtol=1e-8, atol=1e-8)
        if system.dim == 2:
            assert np.all(f[:, 2] == 0.0)


def test_energies_match_bgflow_definitions():
    # DW4: one pair at distance d contributes a (d - 4)^4 + b (d - 4)^2; unique pairs only.
    x = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [100.0, 0.0], [0.0, 100.0]]], dtype=torch.float64)
    pair = lambda d: 0.9 * (d - 4) ** 4 - 4 * (d - 4) ** 2
    ds = [3.0, 100.0, 100.0, 97.0, np.hypot(3, 100), np.hypot(100, 100)]
    assert float(DW4.energy(x)) == pytest.approx(sum(pair(d) for d in ds), rel=1e-12)
    # LJ13: eps [(1/d)^12 - 2 (1/d)^6] per unique pair + 0.5 sum |x - mean|^2.
    y = _configs(LJ13, 1, 2)
    d = torch.cdist(y[0], y[0])[torch.triu_indices(13, 13, 1).unbind()]
    ref = (d ** -12 - 2 * d ** -6).sum() + 0.5 * (y[0] - y[0].mean(0)).pow(2).sum()
    assert float(LJ13.energy(y)) == pytest.approx(float(ref), rel=1e-12)
    assert UNITS.energy_kjmol == pytest.approx(kT(119.8))


def test_reduced_units_and_errors():
    assert UNITS.length_nm == pytest.approx(2 ** (1 / 6) * 0.3405)
    assert UNITS.time_ps == pytest.approx(UNITS.length_nm * np.sqrt(39.948 / kT(119.8)))
    with pytest.raises(ValueError, match="unknown particle system"):
        get_system("lj38")
    with pytest.raises(ValueError, match="expects positions"):
        DW4.energy(torch.zeros(1, 4, 3))
    x = np.arange(8.0).reshape(4, 2)
    np.testing.assert_allclose(DW4.from_nm(DW4.to_nm(x)), x)
