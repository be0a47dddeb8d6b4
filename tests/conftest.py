"""Shared fixtures: small molecules and generators made here, nothing downloaded."""
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


def chain_topology(n_atoms: int = 5) -> app.Topology:
    """A linear chain of carbons, bonded in order (a small molecule for exact tests)."""
    top = app.Topology()
    residue = top.addResidue("CHN", top.addChain())
    atoms = [top.addAtom(f"C{i}", app.element.carbon, residue) for i in range(n_atoms)]
    for a, b in zip(atoms, atoms[1:]):
        top.addBond(a, b)
    return top


def randomize(generator, scale: float = 0.3, seed: int = 0):
    """Give every conditioner's (zero-initialised) last layer random weights: a non-trivial flow."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return generator


TINY_MODEL = {"hidden": [16, 16], "n_torsion_layers": 2, "n_ic_layers": 2}


@pytest.fixture(scope="session")
def md_data(tmp_path_factory):
    """A short real OpenMM run of alanine dipeptide (positions, forces, energies) as .npz."""
    from openmm_smoothflow.md.sampling import simulate

    path = tmp_path_factory.mktemp("data") / "ala2-short.npz"
    simulate(n_frames=400, output=path, steps_per_frame=25, equilibration_steps=500, seed=7, progress=False)
    return path
