"""States from backbone dihedrals: the IUPAC dihedral against mdtraj, the built-in definitions."""
import numpy as np
import pytest
from helpers import chain_topology
from openmm import unit

from openmm_smoothflow.analysis.phi_psi import phi_psi
from openmm_smoothflow.bg.states import DEFINITIONS, StateLabeller, backbone_quads, dihedrals, get_definition


def _frames(ala2, n=20, seed=0):
    rng = np.random.default_rng(seed)
    x = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    frames = x[None] + 0.03 * rng.standard_normal((n,) + x.shape)   # distorted, so phi/psi vary
    return frames


def test_dihedrals_match_mdtraj(ala2):
    frames = _frames(ala2)
    labeller = StateLabeller(ala2.topology, get_definition("basins"))
    np.testing.assert_allclose(labeller.phi_psi(frames), phi_psi(frames, ala2.topology), atol=1e-5)
    mirrored = frames * np.array([-1.0, 1.0, 1.0])  # a mirror image flips the sign of every dihedral
    np.testing.assert_allclose(dihedrals(mirrored, labeller.quads), -dihedrals(frames, labeller.quads), atol=1e-12)


def test_basin_and_phi_labels():
    phi = np.array([-1.4, -1.2, -1.4, 1.0, 1.2, -2.5])
    psi = np.array([2.6, -0.7, -3.0, 0.5, -2.8, 0.0])
    assert DEFINITIONS["basins"].label(phi, psi).tolist() == [0, 1, 0, 2, 2, 1]
    assert DEFINITIONS["phi"].label(phi, psi).tolist() == [0, 0, 0, 1, 1, 0]
    assert DEFINITIONS["basins"].names == ("beta", "alpha_R", "phi>0")


def test_labeller_on_the_molecule(ala2):
    labels, angles = StateLabeller(ala2.topology, get_definition("phi"))(_frames(ala2, 5))
    assert labels.shape == (5,) and angles.shape == (5, 2)
    assert (labels == (angles[:, 0] > 0)).all()


def test_errors():
    with pytest.raises(ValueError, match="phi and psi"):
        backbone_quads(chain_topology(5))
    with pytest.raises(ValueError, match="unknown states"):
        get_definition("nope")
