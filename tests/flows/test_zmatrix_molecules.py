"""Z-matrices of molecules other than alanine dipeptide: backbone phi/psi explicit for every residue,
ring atoms placed by ring torsions, the ring-closing bonds found; alanine dipeptide's Z-matrix unchanged
(the shipped models were built on it). PDBs: ``tests/data`` (ACE-PHE-NME built and minimised with the
package's force field; the others copies of the project's reference molecules)."""
from pathlib import Path

import pytest
import torch
from openmm import app, unit

from openmm_smoothflow.flows.ic import InternalCoordinates
from openmm_smoothflow.flows.rings import ring_closures, ring_restraint_pairs
from openmm_smoothflow.flows.zmatrix import (backbone_dihedrals, named_backbone_dihedrals, torsion_indices,
                                             zmatrix_from_topology)

DATA = Path(__file__).resolve().parent.parent / "data"
MOLECULES = ["ace-val-nme.pdb", "ace-pro-nme.pdb", "ace-phe-nme.pdb", "ace-ala-ala-nme.pdb"]

# alanine dipeptide (the packaged PDB): what every shipped model's metadata holds
ALA2_FRAME = (8, 6, 14)
ALA2_ROWS = [(10, 8, 6, 14), (9, 8, 6, 14), (4, 6, 8, 14), (7, 6, 8, 4), (16, 14, 8, 6), (15, 14, 8, 16),
             (11, 10, 8, 6), (12, 10, 8, 11), (13, 10, 8, 11), (1, 4, 6, 8), (5, 4, 6, 1), (18, 16, 14, 8),
             (17, 16, 14, 18), (0, 1, 4, 6), (2, 1, 4, 0), (3, 1, 4, 0), (19, 18, 16, 14), (20, 18, 16, 19),
             (21, 18, 16, 19)]


def pdb(name: str) -> app.PDBFile:
    return app.PDBFile(str(DATA / name))


def by_name(zmatrix, label: str) -> int:
    return zmatrix.atom_labels.index(label)


def test_alanine_dipeptide_zmatrix_is_the_one_of_the_shipped_models(ala2):
    from openmm_smoothflow.io import packaged
    from openmm_smoothflow.potential import FlowPotential

    z = zmatrix_from_topology(ala2.topology)
    assert z.frame == ALA2_FRAME and list(z.rows) == ALA2_ROWS
    for name in ("ala2-smooth.pt", "ala2-spline.pt"):
        stored = FlowPotential(packaged(name)).metadata["zmatrix"]
        assert tuple(stored["frame"]) == ALA2_FRAME and [tuple(r) for r in stored["rows"]] == ALA2_ROWS
    assert ring_closures(z) == [] and ring_restraint_pairs(z) == []


@pytest.mark.parametrize("name", MOLECULES)
def test_every_residue_has_explicit_phi_and_psi(name):
    z = zmatrix_from_topology(pdb(name).topology)
    named = backbone_dihedrals(z)
    n_res = 2 if "ala-ala" in name else 1
    assert len(named["phi"]) == len(named["psi"]) == n_res
    assert z.atom_names[z.frame[0]] in ("N", "CA", "C")  # the root sits on the backbone
    columns = torsion_indices(z, ["phi", "psi"])
    assert len(columns) == 2 * n_res and len(set(columns)) == 2 * n_res
    for quad in named["phi"] + named["psi"]:
        assert z.torsion_atoms[z.torsion_index(quad)] in (quad, quad[::-1])


def test_tripeptide_torsions_by_residue():
    z = zmatrix_from_topology(pdb("ace-ala-ala-nme.pdb").topology)
    named = named_backbone_dihedrals(z)
    assert list(named) == ["phi1", "psi1", "phi2", "psi2"]
    assert [z.atom_labels[a] for a in named["phi2"]] == ["ALA1-C", "ALA2-N", "ALA2-CA", "ALA2-C"]
    assert torsion_indices(z, ["phi"]) == torsion_indices(z, ["phi1", "phi2"])
    assert torsion_indices(z, ["psi2", named["phi1"]]) == [z.torsion_index(named["psi2"]),
                                                           z.torsion_index(named["phi1"])]
    with pytest.raises(ValueError, match="phi3"):
        torsion_indices(z, ["phi3"])
    with pytest.raises(ValueError, match="no backbone"):
        torsion_indices(zmatrix_from_topology(_ring_topology()), ["phi"])


def test_phenylalanine_root_stays_on_the_backbone():
    """The graph centre of ACE-PHE-NME is in the side chain; the root is the backbone CA instead."""
    z = zmatrix_from_topology(pdb("ace-phe-nme.pdb").topology)
    labels = z.atom_labels
    assert [labels[a] for a in z.frame] == ["PHE1-CA", "PHE1-N", "PHE1-C"]
    phi, psi = torsion_indices(z, ["phi", "psi"])
    assert [labels[a] for a in z.torsion_atoms[phi]] == ["ACE0-C", "PHE1-N", "PHE1-CA", "PHE1-C"]
    assert [labels[a] for a in z.torsion_atoms[psi]] == ["NME2-N", "PHE1-C", "PHE1-CA", "PHE1-N"]


@pytest.mark.parametrize("name, closure, rows", [
    ("ace-pro-nme.pdb", [("PRO1-CD", "PRO1-CG")],
     {"PRO1-CD": ["PRO1-N", "PRO1-CA", "PRO1-CB"], "PRO1-CG": ["PRO1-CB", "PRO1-CA", "PRO1-N"]}),
    ("ace-phe-nme.pdb", [("PHE1-CE2", "PHE1-CZ")],
     {"PHE1-CE1": ["PHE1-CD1", "PHE1-CG", "PHE1-CD2"], "PHE1-CE2": ["PHE1-CD2", "PHE1-CG", "PHE1-CD1"],
      "PHE1-CZ": ["PHE1-CE1", "PHE1-CD1", "PHE1-CG"]}),
])
def test_rings_placed_by_ring_torsions(name, closure, rows):
    """Ring atoms' torsions reference ring atoms only (not phi's C_ACE or the exocyclic CB), so the
    closing bond depends on the ring's own coordinates; the closing bond and the 1-3 pairs across it
    are the restrained pairs."""
    z = zmatrix_from_topology(pdb(name).topology)
    labels = z.atom_labels
    assert [tuple(sorted((labels[a], labels[b]))) for a, b in ring_closures(z)] == closure
    placed = {labels[r[0]]: [labels[a] for a in r[1:]] for r in z.rows}
    for atom, partners in rows.items():
        assert placed[atom] == partners
    pairs = ring_restraint_pairs(z)
    assert pairs[:len(closure)] == ring_closures(z) and len(set(pairs)) == len(pairs)
    a, b = ring_closures(z)[0]
    bonded = {tuple(sorted(p)) for p in z.graph_bonds}
    n_angles = sum(1 for c in range(z.n_atoms) for end in (a, b) if tuple(sorted((c, end))) in bonded
                   and c not in (a, b))
    assert len(pairs) == 1 + n_angles  # one 1-3 pair per angle through the closing bond


@pytest.mark.parametrize("name", MOLECULES)
def test_round_trip_of_other_molecules(name):
    """IC -> Cartesian -> IC in float64 reproduces the PDB's geometry (rings included: the closing bond
    comes back because every other coordinate does)."""
    structure = pdb(name)
    z = zmatrix_from_topology(structure.topology)
    x = torch.tensor(structure.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=torch.float64)[None]
    ic = InternalCoordinates(z)
    bonds, angles, torsions, logdet = ic(x)
    y, logdet_inv = ic.inverse(bonds, angles, torsions)
    def distances(p):
        return torch.linalg.norm(p[0, :, None] - p[0, None], dim=-1)

    torch.testing.assert_close(distances(y), distances(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-12, rtol=0)


def _ring_topology():
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    atoms = [top.addAtom(f"C{i}", app.element.carbon, res) for i in range(7)]
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (2, 6)]:
        top.addBond(atoms[a], atoms[b])
    return top


def test_ring_without_names_gets_ring_torsions():
    """A benzene-like ring with a substituent: every ring row's four atoms are ring atoms where the
    ring offers them."""
    z = zmatrix_from_topology(_ring_topology())
    ring = set(range(6))
    closures = ring_closures(z)
    assert len(closures) == 1 and set(closures[0]) <= ring
    for i, j, k, l in z.rows:
        if {i, j, k} <= ring:
            assert l in ring, (i, j, k, l)
