"""The molecule of a run: an OpenMM Topology and a start structure, from a PDB file, a data file or a model.

``smoothflow simulate`` writes its molecule into the data file: ``molecule_pdb``, the PDB text of the
topology at the start structure (energy-minimised when the run minimised) with every bond as a CONECT
record, and ``bonds`` (M, 2) int atom-index pairs, the exact bond graph (next to ``elements`` and
``atom_names``). An export carries the same PDB text in its metadata (``molecule_pdb``) and its bond
graph (``bonds``). :func:`load_molecule` turns any of them into a :class:`Molecule`, so that every
command finds the molecule in the file it is given; ``--pdb`` overrides.

Models without ``molecule_pdb`` (older exports, checkpoints whose data file has moved) still give the
topology, rebuilt from their atom names, residues, elements and bond graph; their start structure is
then only known for the packaged alanine dipeptide (recognised by its full topology, not by its size).
Only ``openmm`` and ``numpy`` are imported at module level.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from openmm import app, unit

from ..units import PathLike

DATA_KEYS = ("molecule_pdb", "bonds")
NO_MOLECULE_HINT = "give the molecule's PDB file with --pdb"


@dataclass
class Molecule:
    """``topology`` (openmm.app.Topology), ``xyz`` (N, 3) nm start structure or None, ``source`` (where
    it came from, for messages). Has ``positions`` like ``app.PDBFile`` (a Quantity, nm)."""

    topology: app.Topology
    xyz: Optional[np.ndarray]
    source: str

    @property
    def n_atoms(self) -> int:
        return self.topology.getNumAtoms()

    @property
    def positions(self):
        return None if self.xyz is None else unit.Quantity(self.xyz, unit.nanometer)

    def getPositions(self, asNumpy: bool = False):  # noqa: N802 - app.PDBFile's name
        return self.positions

    def start_structure(self) -> np.ndarray:
        """The start structure (N, 3) nm; ValueError when ``source`` has none."""
        if self.xyz is None:
            raise ValueError(f"{self.source} carries no start structure: {NO_MOLECULE_HINT}")
        return self.xyz


# ---- writing -------------------------------------------------------------------------------------
def bond_array(topology) -> np.ndarray:
    """The bond graph (M, 2) int32, each pair sorted, pairs sorted."""
    pairs = sorted({tuple(sorted((b[0].index, b[1].index))) for b in topology.bonds()})
    return np.array(pairs, dtype=np.int32).reshape(-1, 2)


def pdb_text(topology, xyz_nm: np.ndarray) -> str:
    """PDB text of ``topology`` at ``xyz_nm`` (N, 3) nm, every bond written as a CONECT record (OpenMM
    itself writes CONECT only for non-standard residues)."""
    buffer = io.StringIO()
    app.PDBFile.writeHeader(topology, buffer)
    app.PDBFile.writeModel(topology, unit.Quantity(np.asarray(xyz_nm, dtype=np.float64), unit.nanometer), buffer)
    serials = [int(line[6:11]) for line in buffer.getvalue().splitlines() if line[:6] in ("ATOM  ", "HETATM")]
    partners: Dict[int, List[int]] = {}
    for a, b in bond_array(topology):
        partners.setdefault(int(a), []).append(int(b))
        partners.setdefault(int(b), []).append(int(a))
    for atom in sorted(partners):
        others = sorted(partners[atom])
        for start in range(0, len(others), 4):
            buffer.write("CONECT" + "".join(f"{serials[i]:5d}" for i in [atom] + others[start:start + 4]) + "\n")
    buffer.write("END\n")
    return buffer.getvalue()


def data_entries(topology, xyz_nm: np.ndarray) -> Dict[str, np.ndarray]:
    """What a data file stores of its molecule (``DATA_KEYS``, plus ``elements`` and ``atom_names``)."""
    atoms = list(topology.atoms())
    return {"molecule_pdb": np.array(pdb_text(topology, xyz_nm)), "bonds": bond_array(topology),
            "elements": np.array([a.element.symbol if a.element is not None else "" for a in atoms]),
            "atom_names": np.array([a.name for a in atoms])}


# ---- reading -------------------------------------------------------------------------------------
def _with_bonds(topology, bonds: np.ndarray) -> app.Topology:
    """``topology`` with exactly ``bonds`` (M, 2) (a PDB reader adds template bonds of its own)."""
    if np.array_equal(bond_array(topology), np.asarray(bonds, dtype=np.int32).reshape(-1, 2)):
        return topology
    out = app.Topology()
    atoms = []
    for chain in topology.chains():
        new_chain = out.addChain(chain.id)
        for residue in chain.residues():
            new_res = out.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
            atoms += [out.addAtom(a.name, a.element, new_res, a.id) for a in residue.atoms()]
    for a, b in np.asarray(bonds).reshape(-1, 2):
        out.addBond(atoms[int(a)], atoms[int(b)])
    out.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    return out


def from_pdb_text(text: str, bonds: Optional[np.ndarray] = None, source: str = "PDB text") -> Molecule:
    """The molecule of PDB ``text``; with ``bonds`` (M, 2) the bond graph is exactly those pairs."""
    try:
        pdb = app.PDBFile(io.StringIO(str(text)))
    except Exception as exc:
        raise ValueError(f"{source}: unreadable molecule PDB text ({type(exc).__name__}: {exc})") from None
    topology = pdb.topology if bonds is None else _with_bonds(pdb.topology, bonds)
    xyz = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    return Molecule(topology, xyz, source)


def from_pdb_file(path: PathLike) -> Molecule:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PDB file not found: {path}")
    try:
        pdb = app.PDBFile(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable PDB file ({type(exc).__name__}: {exc})") from None
    return Molecule(pdb.topology, np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)), str(path))


def from_data(path: PathLike) -> Molecule:
    """The molecule stored in a data file of ``smoothflow simulate``; ValueError for an older file without one."""
    from .sampling import open_data

    path = Path(path)
    with open_data(path) as npz:
        if "molecule_pdb" not in npz.files:
            raise ValueError(f"{path} carries no molecule (a data file written before `smoothflow simulate` "
                             f"stored it): {NO_MOLECULE_HINT}")
        text = str(npz["molecule_pdb"][()])
        bonds = np.asarray(npz["bonds"]) if "bonds" in npz.files else None
        n_atoms = npz["positions"].shape[1] if "positions" in npz.files else None
    molecule = from_pdb_text(text, bonds, source=str(path))
    if n_atoms is not None and n_atoms != molecule.n_atoms:
        raise ValueError(f"{path}: its molecule has {molecule.n_atoms} atoms, its positions {n_atoms}")
    return molecule


def topology_from_tables(names: Sequence[str], elements: Sequence[str], residue_names: Sequence[str],
                         residue_indices: Optional[Sequence[int]], bonds: Sequence[Sequence[int]]) -> app.Topology:
    """A one-chain Topology from per-atom names, element symbols, residue names and residue indices
    (without them: a new residue wherever the residue name changes) and the bond graph."""
    top = app.Topology()
    chain = top.addChain("A")
    keys = list(residue_indices) if residue_indices is not None else list(residue_names)
    atoms, residue = [], None
    for i, (name, symbol, res_name) in enumerate(zip(names, elements, residue_names)):
        if residue is None or keys[i] != keys[i - 1]:
            residue = top.addResidue(res_name, chain, str(top.getNumResidues() + 1))
        atoms.append(top.addAtom(name, app.element.get_by_symbol(symbol) if symbol else None, residue))
    for a, b in bonds:
        top.addBond(atoms[int(a)], atoms[int(b)])
    return top


def _packaged_structure(topology) -> Optional[np.ndarray]:
    """The packaged alanine dipeptide's positions (nm) when ``topology`` is that molecule (same atom
    names, residues, elements and bonds), else None."""
    from .systems import alanine_dipeptide_pdb

    packaged = from_pdb_file(alanine_dipeptide_pdb())
    return packaged.xyz if _signature(packaged.topology) == _signature(topology) else None


def _signature(topology) -> Tuple:
    atoms = list(topology.atoms())
    return (tuple((a.name, a.residue.name, a.element.symbol if a.element is not None else "") for a in atoms),
            tuple(map(tuple, bond_array(topology).tolist())))


def from_metadata(meta: Dict[str, Any], source: str) -> Molecule:
    """The molecule of an export's metadata: its ``molecule_pdb``, else its atom/residue names,
    elements and bonds (start structure: see the module docstring)."""
    bonds = meta.get("bonds")
    if meta.get("molecule_pdb"):
        return from_pdb_text(meta["molecule_pdb"], None if bonds is None else np.asarray(bonds), source)
    zmatrix = meta.get("zmatrix") or {}
    if isinstance(zmatrix, str):
        zmatrix = json.loads(zmatrix)
    names = meta.get("atom_names") or zmatrix.get("atom_names")
    residues = meta.get("residue_names") or zmatrix.get("residue_names")
    residue_indices = meta.get("residue_indices") or zmatrix.get("residue_indices")
    bonds = bonds if bonds is not None else zmatrix.get("graph_bonds")
    if names is None or residues is None or bonds is None or not meta.get("elements"):
        raise ValueError(f"{source} does not record its molecule (atom names, residues, bonds): {NO_MOLECULE_HINT}")
    topology = topology_from_tables(names, meta["elements"], residues, residue_indices, bonds)
    return Molecule(topology, _packaged_structure(topology), source)


def from_model(path: PathLike) -> Molecule:
    """The molecule of an exported model (its metadata) or of a training checkpoint (the molecule of its
    training configuration, else its Z-matrix's atoms and bonds)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    from ..potential.torchscript import is_export, read_metadata

    if is_export(path):
        return from_metadata(read_metadata(path), str(path))
    from ..io import load_torch

    try:
        checkpoint = load_torch(path)
        arch = json.loads(checkpoint["generator"]["architecture"])
    except Exception:
        raise ValueError(f"{path} is neither a smoothflow export nor a training checkpoint") from None
    config = json.loads(checkpoint.get("config", "{}"))
    source = config.get("pdb") or (config.get("data") or [None])[0]
    if source and Path(source).is_file():
        try:
            return load_molecule(source)
        except ValueError:
            pass  # an older data file: the Z-matrix still knows the atoms
    return from_metadata({"elements": arch["elements"], "zmatrix": arch["zmatrix"]}, str(path))


def load_molecule(pdb: Optional[PathLike] = None, *, data: Optional[Any] = None,
                  model: Optional[PathLike] = None) -> Molecule:
    """The molecule of a run: ``pdb`` (a PDB file, or a data file that carries its molecule) when
    given, else the (first) ``data`` file's, else the ``model``'s. ValueError naming the file when
    none carries one; never a default molecule."""
    if pdb is not None:
        return from_data(pdb) if Path(pdb).suffix == ".npz" else from_pdb_file(pdb)
    if data is not None:
        first = data if isinstance(data, (str, Path)) else list(data)[0]
        return from_data(first)
    if model is not None:
        return from_model(model)
    raise ValueError(f"no molecule: {NO_MOLECULE_HINT}")


def check_atoms(molecule: Molecule, n_atoms: int, what: str) -> None:
    """ValueError when ``molecule`` has another atom count than ``what`` (e.g. "the data") with ``n_atoms``."""
    if molecule.n_atoms != n_atoms:
        raise ValueError(f"the molecule of {molecule.source} has {molecule.n_atoms} atoms, but {what} has "
                         f"{n_atoms}: give the matching PDB file with --pdb")
