"""md/molecule.py: the molecule a data file, a model or a PDB file carries, and the errors without one."""
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY_MODEL
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.flows.zmatrix import zmatrix_from_topology
from openmm_smoothflow.io import packaged
from openmm_smoothflow.md import molecule, systems
from openmm_smoothflow.md.sampling import simulate
from openmm_smoothflow.potential import export

DATA = Path(__file__).resolve().parent.parent / "data"
MOLECULES = ("ace-val-nme", "ace-pro-nme", "ace-ala-ala-nme")


def signature(topology):
    return ([(a.name, a.residue.name, a.residue.index, a.element.symbol) for a in topology.atoms()],
            molecule.bond_array(topology).tolist())


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("molecules")
    files = {}
    for name in MOLECULES:
        files[name] = out / f"{name}.npz"
        simulate(DATA / f"{name}.pdb", 2, output=files[name], steps_per_frame=2, equilibration_steps=0, seed=1,
                 progress=False)
    return files


@pytest.mark.parametrize("name", MOLECULES)
def test_data_file_carries_its_molecule(data_files, name):
    pdb = systems.load_pdb(DATA / f"{name}.pdb")
    mol = molecule.load_molecule(data=data_files[name])
    assert mol.source == str(data_files[name])
    assert signature(mol.topology) == signature(pdb.topology)
    assert zmatrix_from_topology(mol.topology) == zmatrix_from_topology(pdb.topology)
    # the start structure is the minimised one, within a fraction of a bond length of the PDB's
    assert mol.xyz.shape == (pdb.topology.getNumAtoms(), 3)
    assert np.abs(mol.xyz - pdb.getPositions(asNumpy=True)._value).max() < 0.05
    with np.load(data_files[name]) as npz:
        assert str(npz["molecule_pdb"]).count("CONECT") == pdb.topology.getNumAtoms()  # every atom is bonded
        np.testing.assert_array_equal(npz["bonds"], molecule.bond_array(pdb.topology))
    # --pdb may name the data file itself; load_pdb reads it too
    assert signature(molecule.load_molecule(data_files[name]).topology) == signature(pdb.topology)
    assert signature(systems.load_pdb(data_files[name]).topology) == signature(pdb.topology)


def test_pdb_overrides_the_data(data_files):
    mol = molecule.load_molecule(DATA / "ace-val-nme.pdb", data=data_files["ace-pro-nme"])
    assert mol.n_atoms == 28 and mol.source.endswith("ace-val-nme.pdb")


def test_bonds_are_exactly_the_stored_ones():
    pdb = systems.load_pdb(DATA / "ace-pro-nme.pdb")
    text = molecule.pdb_text(pdb.topology, pdb.getPositions(asNumpy=True)._value)
    bonds = molecule.bond_array(pdb.topology)
    fewer = molecule.from_pdb_text(text, bonds[1:])  # the reader's template bonds do not come back
    assert molecule.bond_array(fewer.topology).tolist() == bonds[1:].tolist()
    assert [a.name for a in fewer.topology.atoms()] == [a.name for a in pdb.topology.atoms()]


def test_old_data_without_a_molecule_says_give_pdb(data_files, tmp_path):
    with np.load(data_files["ace-val-nme"]) as npz:
        np.savez(tmp_path / "old.npz", **{k: npz[k] for k in ("positions", "forces", "energies", "temperature")})
    with pytest.raises(ValueError, match=r"old.npz carries no molecule .*give the molecule's PDB file with --pdb"):
        molecule.load_molecule(data=tmp_path / "old.npz")
    with pytest.raises(ValueError, match="no molecule: give the molecule's PDB file with --pdb"):
        molecule.load_molecule()
    with pytest.raises(ValueError, match="no molecule"):
        systems.load_pdb(None)
    with pytest.raises(FileNotFoundError, match="data file not found"):
        molecule.load_molecule(data=tmp_path / "missing.npz")


def test_packaged_frames_carry_alanine_dipeptide():
    mol = molecule.load_molecule(data=packaged("ala2-frames.npz"))
    assert signature(mol.topology) == signature(systems.load_pdb(systems.alanine_dipeptide_pdb()).topology)


def test_model_metadata_gives_the_molecule(data_files, tmp_path):
    pdb = systems.load_pdb(DATA / "ace-ala-ala-nme.pdb")
    torch.manual_seed(0)
    generator = BoltzmannGenerator.from_topology(pdb.topology, **TINY_MODEL)
    xyz = pdb.getPositions(asNumpy=True)._value
    export(generator, tmp_path / "with.pt", molecule_pdb=molecule.pdb_text(pdb.topology, xyz))
    mol = molecule.load_molecule(model=tmp_path / "with.pt")
    assert signature(mol.topology) == signature(pdb.topology)
    np.testing.assert_allclose(mol.start_structure(), xyz, atol=1e-4)  # PDB precision
    # without the PDB text: the topology from the metadata (residue indices split ALA-ALA), no structure
    export(generator, tmp_path / "without.pt")
    bare = molecule.load_molecule(model=tmp_path / "without.pt")
    assert signature(bare.topology) == signature(pdb.topology)
    assert [r.name for r in bare.topology.residues()] == ["ACE", "ALA", "ALA", "NME"]
    with pytest.raises(ValueError, match=r"without.pt carries no start structure: give .* --pdb"):
        bare.start_structure()


def test_old_alanine_dipeptide_exports_keep_their_start_structure():
    ala2 = systems.load_pdb(systems.alanine_dipeptide_pdb())
    mol = molecule.load_molecule(model=packaged("ala2-smooth.pt"))  # exported before molecule_pdb existed
    assert signature(mol.topology) == signature(ala2.topology)
    np.testing.assert_allclose(mol.start_structure(), ala2.getPositions(asNumpy=True)._value)


def test_checkpoint_gives_the_molecule_of_its_data(data_files, tmp_path):
    import json

    from openmm_smoothflow.training.checkpoint import generator_state, save_checkpoint

    pdb = systems.load_pdb(DATA / "ace-pro-nme.pdb")
    state = generator_state(BoltzmannGenerator.from_topology(pdb.topology, **TINY_MODEL))
    config = json.dumps({"data": [str(data_files["ace-pro-nme"])], "pdb": None})
    save_checkpoint(tmp_path / "best.pt", {"generator": state, "config": config})
    mol = molecule.load_molecule(model=tmp_path / "best.pt")
    assert mol.source == str(data_files["ace-pro-nme"]) and mol.xyz is not None
    save_checkpoint(tmp_path / "moved.pt", {"generator": state, "config": json.dumps({"data": ["gone.npz"]})})
    moved = molecule.load_molecule(model=tmp_path / "moved.pt")  # the Z-matrix still knows the atoms
    assert signature(moved.topology) == signature(pdb.topology) and moved.xyz is None


def test_atom_count_mismatch_names_both(data_files):
    mol = molecule.load_molecule(data=data_files["ace-val-nme"])
    with pytest.raises(ValueError, match="has 28 atoms, but the flow has 22: give the matching PDB file"):
        molecule.check_atoms(mol, 22, "the flow")


def test_training_data_of_two_molecules_are_refused(data_files):
    from openmm_smoothflow.training.data import load_md_data

    with pytest.raises(ValueError, match="atom names differ|atoms, but"):
        load_md_data([data_files["ace-val-nme"], data_files["ace-ala-ala-nme"]])
