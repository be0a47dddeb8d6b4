"""The batched API: energies and forces of (B, N, 3) frames equal the TorchForce's, frame by frame."""
import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_smoothflow.io import packaged
from openmm_smoothflow.potential import FlowPotential, energies_and_forces, load_model

MODEL = packaged("ala2-smooth.pt")
BOX = np.array([[2.4, 0.0, 0.0], [0.0, 2.4, 0.0], [0.8, -0.6, 2.2]])


@pytest.fixture(scope="module")
def frames():
    data = np.load(packaged("ala2-frames.npz"))
    return np.asarray(data["positions"][:4], dtype=np.float64)


def test_matches_torchforce_frame_by_frame(frames, ala2):
    energies, forces = energies_and_forces(MODEL, frames, batch_size=3)  # two chunks
    assert energies.shape == (4,) and forces.shape == (4, 22, 3) and energies.dtype == np.float64
    system = FlowPotential(MODEL).createSystem(ala2.topology)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for x, e, f in zip(frames, energies, forces):
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        assert e == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), rel=1e-10)
        expected = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        np.testing.assert_allclose(f, expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())
    e1, f1 = energies_and_forces(load_model(MODEL), frames[0])  # a loaded module, one (N, 3) frame
    assert e1 == pytest.approx(energies[0], rel=1e-12) and f1.shape == (22, 3)


def test_box_makes_frames_whole(frames):
    energies, forces = energies_and_forces(MODEL, frames)
    shifted = frames.copy()
    shifted[:, [2, 9, 15]] += np.array([1, -1, 2]) @ BOX
    e_box, f_box = energies_and_forces(MODEL, shifted, box=BOX)
    np.testing.assert_allclose(e_box, energies, rtol=1e-10)
    np.testing.assert_allclose(f_box, forces, rtol=1e-8, atol=1e-8 * np.abs(forces).max())


def test_bad_input_is_named(frames):
    with pytest.raises(ValueError, match=r"\(B, 22, 3\)"):
        energies_and_forces(MODEL, frames[:, :21])
    bad = frames.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        energies_and_forces(MODEL, bad)
