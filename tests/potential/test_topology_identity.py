"""Exports carry atom names, residue names and the bond graph; checkTopology names the first mismatch;
training checkpoints and foreign TorchScript files get one clear error."""
import json
import warnings

import pytest
import torch
from openmm import app

from helpers import TINY_MODEL, chain_topology
from openmm_smoothflow.errors import SmoothflowWarning
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.flows.zmatrix import ZMatrix
from openmm_smoothflow.io import packaged
from openmm_smoothflow.potential import FlowPotential, export, read_metadata


@pytest.fixture(scope="module")
def tiny_export(ala2, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny.pt"
    export(BoltzmannGenerator.from_topology(ala2.topology, **TINY_MODEL).double(), path)
    return path


def swapped_pdb(tmp_path, first="HA", second="1HB"):  # 1HB: HB1 in OpenMM
    """The packaged PDB with two same-element atoms' lines swapped (same element sequence)."""
    lines = packaged("alanine-dipeptide.pdb").read_text().splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith(("ATOM", "HETATM"))]
    names = [lines[i][12:16].strip() for i in rows]
    a, b = rows[names.index(first)], rows[names.index(second)]
    lines[a], lines[b] = lines[b], lines[a]
    path = tmp_path / "swapped.pdb"
    path.write_text("\n".join(lines) + "\n")
    return app.PDBFile(str(path))


def test_export_metadata_has_names_and_bond_graph(tiny_export, ala2):
    meta = read_metadata(tiny_export)
    assert meta["atom_names"][:3] == ["H1", "CH3", "H2"] and len(meta["atom_names"]) == 22
    assert meta["residue_names"][8] == "ALA"
    assert sorted(map(sorted, meta["bonds"])) == sorted(sorted((a.index, b.index)) for a, b in ala2.topology.bonds())
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmoothflowWarning)  # the full check: no warning
        FlowPotential(tiny_export).checkTopology(ala2.topology)


@pytest.mark.parametrize("model", ["tiny", "ala2-smooth.pt"])
def test_same_element_atoms_in_another_order_are_refused(model, tiny_export, tmp_path):
    """Reproduction 2: HA and HB1 swapped gave -370 instead of -584 kJ/mol, and md ran (the shipped
    exports, older, carry the names in their Z-matrix)."""
    potential = FlowPotential(tiny_export if model == "tiny" else packaged(model))
    pdb = swapped_pdb(tmp_path)
    with pytest.raises(ValueError, match=r"atom name mismatch at atom 9 \(HB1 of ALA2\): the model expects HA"):
        potential.createSystem(pdb.topology)


def test_unbonded_atoms_with_the_right_elements_and_names_are_refused(tiny_export, ala2):
    """Reproduction 2: 22 unbonded atoms with the right element sequence were accepted."""
    top = app.Topology()
    chain = top.addChain()
    residues = {}
    for atom in ala2.topology.atoms():
        if atom.residue.index not in residues:
            residues[atom.residue.index] = top.addResidue(atom.residue.name, chain)
        top.addAtom(atom.name, atom.element, residues[atom.residue.index])
    for model in (tiny_export, packaged("ala2-smooth.pt")):
        with pytest.raises(ValueError, match=r"bond mismatch: the model bonds atom \d+ .* the topology does not "
                                             r"\(it has 0 bonds"):
            FlowPotential(model).checkTopology(top)
    extra = app.PDBFile(str(packaged("alanine-dipeptide.pdb"))).topology
    atoms = list(extra.atoms())
    extra.addBond(atoms[0], atoms[21])
    with pytest.raises(ValueError, match=r"the topology bonds atom 0 \(H1 of ACE1\) to atom 21 .* the model does not"):
        FlowPotential(tiny_export).checkTopology(extra)


def test_older_exports_without_names_warn_and_still_check_what_they_have(tmp_path):
    top = chain_topology(5)
    zmatrix = ZMatrix((1, 0, 2), [(3, 2, 1, 0), (4, 3, 2, 1)], n_atoms=5)  # no names, no graph
    path = tmp_path / "old.pt"
    export(BoltzmannGenerator(zmatrix, ["C"] * 5, {"hidden": [8], "n_torsion_layers": 1, "n_ic_layers": 1}).double(),
           path)
    assert "atom_names" not in read_metadata(path)
    with pytest.warns(SmoothflowWarning, match="no atom names .*older export"):
        FlowPotential(path).checkTopology(top)
    broken = chain_topology(5)
    broken._bonds.pop()  # atoms 3-4 no longer bonded: the Z-matrix bond is still checked
    with pytest.warns(SmoothflowWarning), pytest.raises(ValueError, match="bonds atom 3 .* to atom 4"):
        FlowPotential(path).checkTopology(broken)


def test_training_checkpoint_passed_as_a_model(tmp_path):
    """Reproduction 6: a training checkpoint given to md was called "corrupted"."""
    from openmm_smoothflow.training.checkpoint import generator_state, save_checkpoint

    generator = BoltzmannGenerator.from_topology(app.PDBFile(str(packaged("alanine-dipeptide.pdb"))).topology,
                                                 **TINY_MODEL)
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"generator": generator_state(generator), "state": "{}"})
    with pytest.raises(ValueError, match=r"best.pt is a training checkpoint, not an exported model: run "
                                         r"`smoothflow export .*best.pt -o model.pt`"):
        FlowPotential(path)


class _Foreign(torch.nn.Module):
    metadata: str

    def __init__(self, metadata: str):
        super().__init__()
        self.metadata = metadata

    def forward(self, x):
        return x.sum()


@pytest.mark.parametrize("metadata, match", [
    ("not json {", "metadata is not JSON"), ("[1, 2]", "not a JSON object"),
    (json.dumps({"format": "someone/else"}), "format 'someone/else'"),
    (json.dumps({"format": "openmm_smoothflow/energy-v1"}), "without atom_count, elements, temperature")])
def test_foreign_torchscript_files_give_one_clear_error(metadata, match, tmp_path):
    """Reproduction 6: raw KeyError / JSONDecodeError."""
    path = tmp_path / "foreign.pt"
    torch.jit.script(_Foreign(metadata)).save(str(path))
    with pytest.raises(ValueError, match=match):
        FlowPotential(path)
