"""Periodic boxes: make a molecule whole by minimum image along the bonds of its Z-matrix.

In a periodic System an atom may sit in any periodic image (OpenMM's reporters and
``getState(enforcePeriodicBox=True)`` wrap molecules into the box; users load wrapped PDB files).
The flow's internal coordinates need the molecule whole. :class:`MakeWhole` walks the spanning tree
of the Z-matrix bonds (every atom's bond partner is placed before it, the first frame atom is the
root) and moves each atom by the lattice vector that puts it at the minimum image of its bond
partner. The result differs from the input by whole lattice vectors per atom, so the energy of the
whole molecule is the same for every periodic image of every atom, and since the shifts are constant
(no gradient) the forces on the input positions are the forces on the whole molecule.

Box vectors as OpenMM gives them (rows a, b, c of a (3, 3) tensor in nm, reduced form: a = (ax, 0, 0),
b = (bx, by, 0), c = (cx, cy, cz)), triclinic or rectangular; each bond vector is reduced along c,
then b, then a, as OpenMM does, which is the minimum image for bonds shorter than half the box.
"""
import json
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


class MakeWhole(nn.Module):
    """positions (N, 3) nm, box (3, 3) nm -> positions (N, 3) with every tree bond a minimum image.

    ``bonds`` are (child, parent) pairs, one per atom but the root, each parent appearing as a child
    earlier in the list or being the root: :attr:`ZMatrix.bond_atoms` order."""

    def __init__(self, bonds: Sequence[Tuple[int, int]], n_atoms: int):
        super().__init__()
        bonds = [(int(c), int(p)) for c, p in bonds]
        if len(bonds) != n_atoms - 1:
            raise ValueError(f"a spanning tree of {n_atoms} atoms has {n_atoms - 1} bonds, got {len(bonds)}")
        path: List[List[int]] = [[] for _ in range(n_atoms)]  # bonds on the way from the root to each atom
        seen = {bonds[0][1]} if bonds else {0}
        for e, (child, parent) in enumerate(bonds):
            if parent not in seen or child in seen:
                raise ValueError(f"bond {e} ({child}, {parent}): the parent must be placed before the child")
            path[child] = path[parent] + [e]
            seen.add(child)
        matrix = torch.zeros(n_atoms, max(len(bonds), 1), dtype=torch.float64)
        for atom, edges in enumerate(path):
            matrix[atom, edges] = 1.0
        self.register_buffer("child", torch.tensor([c for c, _ in bonds], dtype=torch.long))
        self.register_buffer("parent", torch.tensor([p for _, p in bonds], dtype=torch.long))
        self.register_buffer("path", matrix)  # (N, E): 1 where bond e lies on the root -> atom path

    @classmethod
    def from_zmatrix(cls, zmatrix) -> "MakeWhole":
        """The tree of a :class:`~openmm_smoothflow.flows.zmatrix.ZMatrix`'s bonds."""
        return cls(zmatrix.bond_atoms, zmatrix.n_atoms)

    @classmethod
    def from_metadata(cls, metadata) -> "MakeWhole":
        """From an export's metadata (dict or JSON string): its Z-matrix."""
        from ..flows.zmatrix import ZMatrix

        meta = json.loads(metadata) if isinstance(metadata, str) else metadata
        if "zmatrix" not in meta:
            raise ValueError("this export has no Z-matrix in its metadata, so its molecule cannot be made "
                             "whole in a periodic box")
        return cls.from_zmatrix(ZMatrix.from_dict(meta["zmatrix"]))

    def forward(self, positions: Tensor, box: Tensor) -> Tensor:
        with torch.no_grad():
            box = box.to(positions.dtype)
            d = positions.index_select(0, self.child) - positions.index_select(0, self.parent)  # (E, 3)
            n_c = torch.round(d[:, 2] / box[2, 2])
            d = d - n_c[:, None] * box[2]
            n_b = torch.round(d[:, 1] / box[1, 1])
            d = d - n_b[:, None] * box[1]
            n_a = torch.round(d[:, 0] / box[0, 0])
            lattice = n_a[:, None] * box[0] + n_b[:, None] * box[1] + n_c[:, None] * box[2]  # (E, 3)
            shift = self.path.to(positions.dtype) @ lattice  # (N, 3), whole lattice vectors per atom
        return positions - shift


def takes_box(module) -> bool:
    """Whether a scripted energy module's ``forward`` accepts box vectors (exports since periodic support)."""
    return len(module.forward.schema.arguments) >= 3  # self, positions, boxvectors


class WithBox(nn.Module):
    """``forward(positions, boxvectors=None)`` for an export whose ``forward`` takes positions only:
    makes the molecule whole (its Z-matrix from the metadata) when a box is given."""

    metadata: str

    def __init__(self, model: torch.jit.ScriptModule):
        super().__init__()
        self.model = model
        self.metadata = model.metadata
        self.make_whole = MakeWhole.from_metadata(model.metadata)

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tensor:
        if boxvectors is not None:
            positions = self.make_whole(positions, boxvectors)
        return self.model(positions)
