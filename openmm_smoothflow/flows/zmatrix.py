"""Z-matrices: which atoms define the bond, angle and torsion of every atom.

A :class:`ZMatrix` has a *frame* ``(i0, i1, i2)`` -- the three atoms that fix the global frame -- and
one *row* ``(i, j, k, l)`` per remaining atom: atom ``i`` is placed at distance ``|x_i - x_j|``
from ``j``, at angle ``angle(i, j, k)`` (vertex ``j``) and with torsion ``dihedral(i, j, k, l)``
(the IUPAC / mdtraj dihedral, symmetric under reversing the four atoms).  ``j, k, l`` must be placed
(frame atoms or earlier rows) before they are referenced.

Internal coordinates of a Z-matrix with ``R`` rows and ``N = R + 3`` atoms, in this order:

* bonds (R + 2):  ``r(i1, i0)``, ``r(i2, i0)``, then ``r(i, j)`` per row
* angles (R + 1): ``angle(i1, i0, i2)`` (vertex ``i0``), then ``angle(i, j, k)`` per row
* torsions (R):   ``dihedral(i, j, k, l)`` per row

which is ``3N - 6`` numbers.  :func:`zmatrix_from_topology` builds a Z-matrix from the bond graph of an
OpenMM or mdtraj topology; for alanine dipeptide it yields 21 bonds, 20 angles and 19 torsions with the
backbone torsions phi and psi as explicit rows (see the function's docstring).
"""
from __future__ import annotations

from collections import deque
from typing import Dict, List, Optional, Sequence, Tuple, Union

BACKBONE_NAMES = ("N", "CA", "C", "CH3")

Quad = Tuple[int, int, int, int]


class ZMatrix:
    """A validated Z-matrix (see the module docstring).

    Parameters
    ----------
    frame : (i0, i1, i2), three distinct atom indices.
    rows : sequence of (i, j, k, l); ``i`` is the placed atom, ``j, k, l`` its bond, angle and torsion
        partners, all four distinct, ``j, k, l`` placed earlier.
    n_atoms : number of atoms; default ``1 + max index``.  Every atom must be placed exactly once.
    atom_names, residue_names, residue_indices : optional per-atom metadata (indexed by atom index).
    graph_bonds : optional bond list of the molecule (pairs), used to find backbone dihedrals by name.

    Raises ``ValueError`` with a message naming the offending row for any inconsistency.
    """

    def __init__(self, frame: Sequence[int], rows: Sequence[Sequence[int]], n_atoms: Optional[int] = None,
                 atom_names: Optional[Sequence[str]] = None, residue_names: Optional[Sequence[str]] = None,
                 residue_indices: Optional[Sequence[int]] = None,
                 graph_bonds: Optional[Sequence[Sequence[int]]] = None) -> None:
        frame = tuple(int(a) for a in frame)
        if len(frame) != 3:
            raise ValueError(f"frame must have exactly 3 atoms, got {frame}")
        rows_t: List[Quad] = []
        for r, row in enumerate(rows):
            row = tuple(int(a) for a in row)
            if len(row) != 4:
                raise ValueError(f"Z-matrix row {r} must be (atom, bond, angle, torsion partner), got {row}")
            rows_t.append(row)  # type: ignore[arg-type]
        all_idx = list(frame) + [a for row in rows_t for a in row]
        if n_atoms is None:
            n_atoms = max(all_idx) + 1
        n_atoms = int(n_atoms)
        if n_atoms < 3:
            raise ValueError(f"a Z-matrix needs at least 3 atoms, got n_atoms={n_atoms}")
        bad = sorted({a for a in all_idx if a < 0 or a >= n_atoms})
        if bad:
            raise ValueError(f"atom indices {bad} out of range [0, {n_atoms})")
        if len(set(frame)) != 3:
            raise ValueError(f"frame atoms must be distinct, got {frame}")
        placed = set(frame)
        for r, (i, j, k, l) in enumerate(rows_t):
            if len({i, j, k, l}) != 4:
                raise ValueError(f"Z-matrix row {r} {(i, j, k, l)}: the four atoms must be distinct")
            if i in placed:
                raise ValueError(f"Z-matrix row {r} {(i, j, k, l)}: atom {i} is placed more than once")
            missing = [p for p in (j, k, l) if p not in placed]
            if missing:
                raise ValueError(f"Z-matrix row {r} {(i, j, k, l)}: partner(s) {missing} are used before "
                                 f"they are placed")
            placed.add(i)
        if len(placed) != n_atoms:
            raise ValueError(f"atoms {sorted(set(range(n_atoms)) - placed)} are never placed "
                             f"(every atom must appear exactly once, as a frame atom or a row's first atom)")
        for name, meta in (("atom_names", atom_names), ("residue_names", residue_names),
                           ("residue_indices", residue_indices)):
            if meta is not None and len(meta) != n_atoms:
                raise ValueError(f"{name} has length {len(meta)}, expected n_atoms={n_atoms}")
        self.frame: Tuple[int, int, int] = frame  # type: ignore[assignment]
        self.rows: Tuple[Quad, ...] = tuple(rows_t)
        self.n_atoms = n_atoms
        self.atom_names = None if atom_names is None else [str(a) for a in atom_names]
        self.residue_names = None if residue_names is None else [str(a) for a in residue_names]
        self.residue_indices = None if residue_indices is None else [int(a) for a in residue_indices]
        self.graph_bonds = None if graph_bonds is None else [(int(a), int(b)) for a, b in graph_bonds]

    # ---- sizes and atom tuples -------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def n_bonds(self) -> int:
        return len(self.rows) + 2

    @property
    def n_angles(self) -> int:
        return len(self.rows) + 1

    @property
    def n_torsions(self) -> int:
        return len(self.rows)

    @property
    def n_dof(self) -> int:
        return 3 * self.n_atoms - 6

    @property
    def atom_order(self) -> Tuple[int, ...]:
        """Atom indices in placement order (frame first, then the rows)."""
        return self.frame + tuple(r[0] for r in self.rows)

    @property
    def bond_atoms(self) -> List[Tuple[int, int]]:
        i0, i1, i2 = self.frame
        return [(i1, i0), (i2, i0)] + [(i, j) for i, j, _, _ in self.rows]

    @property
    def angle_atoms(self) -> List[Tuple[int, int, int]]:
        i0, i1, i2 = self.frame
        return [(i1, i0, i2)] + [(i, j, k) for i, j, k, _ in self.rows]

    @property
    def torsion_atoms(self) -> List[Quad]:
        return list(self.rows)

    @property
    def atom_labels(self) -> List[str]:
        """Human-readable labels ``RES<idx>-NAME`` (or ``#<index>`` without metadata)."""
        if self.atom_names is None:
            return [f"#{a}" for a in range(self.n_atoms)]
        res = self.residue_names or [""] * self.n_atoms
        rid = self.residue_indices or [0] * self.n_atoms
        return [f"{res[a]}{rid[a]}-{self.atom_names[a]}" for a in range(self.n_atoms)]

    def row_levels(self) -> List[int]:
        """Placement depth of each row: 1 + max depth of its partners (frame atoms have depth 0).

        Rows of equal depth can be placed simultaneously when converting ICs to positions."""
        depth = {a: 0 for a in self.frame}
        levels = []
        for i, j, k, l in self.rows:
            depth[i] = 1 + max(depth[j], depth[k], depth[l])
            levels.append(depth[i])
        return levels

    def torsion_index(self, atoms: Sequence[int]) -> int:
        """Torsion column whose row is exactly ``atoms`` (4 atoms, in either order)."""
        quad = tuple(int(a) for a in atoms)
        for c, row in enumerate(self.rows):
            if row == quad or row[::-1] == quad:
                return c
        raise ValueError(f"dihedral {quad} is not an explicit torsion of this Z-matrix")

    # ---- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> Dict[str, object]:
        """Plain dict (lists/ints/strings) for checkpoints and export metadata."""
        return {"frame": list(self.frame), "rows": [list(r) for r in self.rows], "n_atoms": self.n_atoms,
                "atom_names": self.atom_names, "residue_names": self.residue_names,
                "residue_indices": self.residue_indices,
                "graph_bonds": None if self.graph_bonds is None else [list(b) for b in self.graph_bonds]}

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "ZMatrix":
        return cls(d["frame"], d["rows"], n_atoms=d.get("n_atoms"), atom_names=d.get("atom_names"),
                   residue_names=d.get("residue_names"), residue_indices=d.get("residue_indices"),
                   graph_bonds=d.get("graph_bonds"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZMatrix) and (self.frame, self.rows, self.n_atoms) == (
            other.frame, other.rows, other.n_atoms)

    def __repr__(self) -> str:
        return f"ZMatrix(n_atoms={self.n_atoms}, frame={self.frame}, rows={list(self.rows)})"


# ---- construction from a topology -----------------------------------------------------------------
def _iter(obj):
    return obj() if callable(obj) else obj


def _topology_info(topology):
    """(names, is_hydrogen, residue names, residue indices, bonds) of an openmm or mdtraj Topology."""
    atoms = list(_iter(topology.atoms))
    for n, a in enumerate(atoms):
        if a.index != n:
            raise ValueError("topology atoms must be indexed 0..N-1 in order")
    names = [a.name for a in atoms]
    is_h = []
    for a in atoms:
        sym = getattr(a.element, "symbol", None) if a.element is not None else None
        is_h.append(sym == "H" if sym is not None else a.name.upper().startswith("H"))
    res_names = [a.residue.name for a in atoms]
    res_idx = [a.residue.index for a in atoms]
    bonds = sorted({tuple(sorted((b[0].index, b[1].index))) for b in _iter(topology.bonds)})
    return names, is_h, res_names, res_idx, bonds


def zmatrix_from_topology(topology, sibling_torsions: bool = True) -> ZMatrix:
    """Build a deterministic Z-matrix from the bonds of an ``openmm.app.Topology`` or ``mdtraj.Topology``.

    Algorithm.  The bond graph must be connected (else ``ValueError``: give a :class:`ZMatrix`
    yourself).  The root ``i0`` is the graph centre (minimal eccentricity, ties: backbone name, index)
    among the backbone atoms (the middle atoms N, CA, C of the phi/psi dihedrals found by
    :func:`backbone_dihedrals`' rule) when the molecule has a peptide backbone, else among heavy atoms
    with at least two bonds -- for alanine dipeptide the alanine CA.  A BFS
    spanning tree is grown from the root, visiting each atom's unvisited neighbours in the priority
    order (heavy before hydrogen, backbone names ``N, CA, C, CH3`` first, then index).  The frame is the
    root and its first two children ``(i0, i1, i2)``; the other atoms become rows in BFS order with

    * ``j`` = tree parent (bonded),
    * ``k`` = parent of ``j`` (bonded to ``j``), or ``i1`` if ``j`` is the root,
    * ``l`` = the first-placed child of ``j`` when ``i`` is a later sibling and ``sibling_torsions`` is
      True (improper-type reference, e.g. the 2nd and 3rd methyl H, CB/HA on CA: these torsions stay
      near +-120 deg instead of co-rotating); otherwise the parent of ``k`` (a proper chain
      ``i-j-k-l``), or, when ``k`` is the root, the frame atom among ``i1, i2`` that is not ``j``
      (bonded to ``k``); for children of the root ``(k, l) = (i1, i2)``;
    * ring atoms: when ``i, j, k`` lie on one ring (a cycle closed by a bond the tree leaves out),
      ``l`` is the first-placed atom of that ring bonded to ``k`` (a ring torsion, e.g. PRO's
      ``(CD, N, CA, CB)`` instead of ``(CD, N, CA, C_ACE)``, PHE's ``(CE1, CD1, CG, CD2)`` instead of
      ``(CE1, CD1, CG, CB)``), if one is placed already.  The ring's closure then depends on the
      ring's own internal coordinates only, not on phi or an exocyclic torsion.

    Ring-closure bonds (not in the spanning tree) are not internal coordinates
    (``flows.rings.ring_closures``; the ring restraint there keeps them physical).  Backbone phi and psi of every
    residue are explicit rows for capped peptides (ACE-X-NME, ACE-X-Y-NME); for alanine dipeptide
    (``i0, i1, i2`` = CA, N, C of ALA) phi is the row ``(C_ACE, N, CA, C)`` and psi the row
    ``(N_NME, C, CA, N)``.  Atom names, residue names/indices and the bond list are stored on the
    returned Z-matrix as metadata.
    """
    names, is_h, res_names, res_idx, bonds = _topology_info(topology)
    n = len(names)
    if n < 3:
        raise ValueError(f"need at least 3 atoms, topology has {n}")
    nbrs = _neighbours(n, bonds)

    def key(a: int):
        return (is_h[a], names[a] not in BACKBONE_NAMES, a)

    def bfs_dist(src: int) -> List[int]:
        dist = [-1] * n
        dist[src] = 0
        q = deque([src])
        while q:
            a = q.popleft()
            for b in nbrs[a]:
                if dist[b] < 0:
                    dist[b] = dist[a] + 1
                    q.append(b)
        return dist

    d0 = bfs_dist(0)
    if min(d0) < 0:
        unreached = [a for a in range(n) if d0[a] < 0]
        raise ValueError(f"the bond graph is disconnected ({len(bonds)} bonds; atoms {unreached[:10]}... not "
                         f"bonded to atom 0); zmatrix_from_topology needs one molecule with bonds -- "
                         f"pass an explicit ZMatrix instead")
    quads = _backbone_quads(names, nbrs)
    cand = sorted({a for q in quads["phi"] + quads["psi"] for a in q[1:3]}) or \
        [a for a in range(n) if not is_h[a] and len(nbrs[a]) >= 2] or [a for a in range(n) if len(nbrs[a]) >= 2]
    root = min(cand, key=lambda a: (max(bfs_dist(a)),) + key(a))

    parent = {root: -1}
    children: Dict[int, List[int]] = {a: [] for a in range(n)}
    order = [root]
    q = deque([root])
    while q:
        a = q.popleft()
        for c in sorted((b for b in nbrs[a] if b not in parent), key=key):
            parent[c] = a
            children[a].append(c)
            order.append(c)
            q.append(c)
    rings = _tree_cycles(parent, bonds)
    rank = {a: r for r, a in enumerate(order)}
    i0, i1, i2 = order[:3]
    rows = []
    for i in order[3:]:
        j = parent[i]
        if j == root:
            k, l = i1, i2
        else:
            k = parent[j]
            first = children[j][0]
            if sibling_torsions and first != i:
                l = first
            elif k != root:
                l = parent[k]
            else:
                l = i2 if j == i1 else i1
        for ring in rings:
            if {i, j, k} <= ring:
                in_ring = [m for m in nbrs[k] if m in ring and m not in (i, j) and rank[m] < rank[i]]
                if in_ring:
                    l = min(in_ring, key=rank.__getitem__)
                    break
        rows.append((i, j, k, l))
    return ZMatrix((i0, i1, i2), rows, n_atoms=n, atom_names=names, residue_names=res_names,
                   residue_indices=res_idx, graph_bonds=bonds)


def _tree_cycles(parent: Dict[int, int], bonds: Sequence[Tuple[int, int]]) -> List[set]:
    """The cycle (atom set) each bond outside the spanning tree ``parent`` closes, in bond order."""
    def path(a: int) -> List[int]:
        out = [a]
        while parent[out[-1]] >= 0:
            out.append(parent[out[-1]])
        return out

    cycles = []
    for a, b in bonds:
        if parent[a] == b or parent[b] == a:
            continue
        pa, pb = path(a), path(b)
        common = set(pa) & set(pb)
        lca = next(x for x in pa if x in common)
        cycles.append(set(pa[:pa.index(lca) + 1]) | set(pb[:pb.index(lca)]))
    return cycles


# ---- named dihedrals --------------------------------------------------------------------------------
def _backbone_quads(names: Sequence[str], nbrs: Sequence[Sequence[int]]) -> Dict[str, List[Quad]]:
    """phi (C', N, CA, C) and psi (N, CA, C, N') quads found by atom names and bonds, in atom order of CA."""
    def named(a: int, name: str) -> List[int]:
        return [b for b in nbrs[a] if names[b] == name]

    out: Dict[str, List[Quad]] = {"phi": [], "psi": []}
    for ca in range(len(names)):
        if names[ca] != "CA":
            continue
        for nn in named(ca, "N"):
            for c in named(ca, "C"):
                out["phi"] += [(cp, nn, ca, c) for cp in named(nn, "C")]
                out["psi"] += [(nn, ca, c, nx) for nx in named(c, "N")]
    return out


def _neighbours(n_atoms: int, bonds: Sequence[Sequence[int]]) -> List[List[int]]:
    nbrs: List[List[int]] = [[] for _ in range(n_atoms)]
    for a, b in bonds:
        nbrs[a].append(b)
        nbrs[b].append(a)
    return nbrs


def backbone_dihedrals(zmatrix: ZMatrix) -> Dict[str, List[Quad]]:
    """Backbone dihedrals found by atom names and bonds: ``{"phi": [(C', N, CA, C), ...],
    "psi": [(N, CA, C, N'), ...]}``, one entry per residue that has them (every residue of a peptide,
    in residue order; ACE/NME caps count as neighbours since their atoms are named C and N).  Needs
    the metadata of :func:`zmatrix_from_topology`."""
    if zmatrix.atom_names is None or zmatrix.graph_bonds is None:
        raise ValueError("this Z-matrix carries no atom names / bonds; build it with zmatrix_from_topology")
    return _backbone_quads(zmatrix.atom_names, _neighbours(zmatrix.n_atoms, zmatrix.graph_bonds))


def named_backbone_dihedrals(zmatrix: ZMatrix) -> Dict[str, Quad]:
    """Each residue's backbone dihedrals by name: ``{"phi1": quad, "psi1": quad, "phi2": ...}``, the
    number being the residue index (of the CA, as in :attr:`ZMatrix.atom_labels`), in residue order."""
    named = backbone_dihedrals(zmatrix)
    rid = zmatrix.residue_indices or list(range(zmatrix.n_atoms))
    out: Dict[str, Quad] = {}
    for ca in sorted({q[2] for q in named["phi"]} | {q[1] for q in named["psi"]}):
        for name, pos in (("phi", 2), ("psi", 1)):
            for q in named[name]:
                if q[pos] == ca:
                    out[f"{name}{rid[ca]}"] = q
    return out


def torsion_indices(zmatrix: ZMatrix, torsions: Sequence[Union[str, Sequence[int]]]) -> List[int]:
    """Torsion columns of the given dihedrals, in the order given.  Each entry is a 4-tuple of atom
    indices (either order) or a name: ``"phi"`` / ``"psi"`` give every residue's phi (psi), in residue
    order (one column for alanine dipeptide, one per residue for longer peptides), ``"phi2"`` /
    ``"psi2"`` the one of residue index 2 (:func:`named_backbone_dihedrals`).  ``ValueError`` if a name
    matches no backbone dihedral or a dihedral is not an explicit torsion of the Z-matrix."""
    out = []
    named = None
    for t in torsions:
        if isinstance(t, str):
            named = named_backbone_dihedrals(zmatrix) if named is None else named
            key = t.lower()
            quads = [q for name, q in named.items() if name.rstrip("0123456789") == key] \
                if key in ("phi", "psi") else ([named[key]] if key in named else [])
            if not quads:
                raise ValueError(f"torsion name {t!r} matches no backbone dihedral of this molecule "
                                 f"(names: {sorted(named)})")
            out += [zmatrix.torsion_index(q) for q in quads]
        else:
            out.append(zmatrix.torsion_index(t))
    return out
