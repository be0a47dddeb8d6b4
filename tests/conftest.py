"""Shared fixtures: small molecules and data made here, nothing downloaded (helpers: ``helpers.py``)."""
import pytest
import torch
from openmm import app, unit

from openmm_smoothflow.md.systems import alanine_dipeptide_pdb


@pytest.fixture(scope="session")
def ala2():
    """The packaged alanine dipeptide PDB (topology + positions in nm)."""
    return app.PDBFile(str(alanine_dipeptide_pdb()))


@pytest.fixture(scope="session")
def ala2_positions(ala2):
    return torch.tensor(ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=torch.float64)


@pytest.fixture(scope="session")
def md_data(tmp_path_factory):
    """A short real OpenMM run of alanine dipeptide (positions, forces, energies) as .npz."""
    from openmm_smoothflow.md.sampling import simulate
    from openmm_smoothflow.md.systems import alanine_dipeptide_pdb

    path = tmp_path_factory.mktemp("data") / "ala2-short.npz"
    simulate(alanine_dipeptide_pdb(), n_frames=400, output=path, steps_per_frame=25, equilibration_steps=500, seed=7, progress=False)
    return path
