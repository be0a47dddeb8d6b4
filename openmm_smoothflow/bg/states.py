"""User-defined states of a molecule for population and free-energy estimates.

A :class:`StateDefinition` names states and labels frames: ``label(phi, psi) -> (n,)`` ints indexing
``names`` (or -1: in no state), from the backbone dihedrals in radians. The built-in definitions are
for alanine dipeptide (:data:`DEFINITIONS`): ``phi`` (phi < 0 | phi > 0) and ``basins`` (beta/PII,
alpha_R, and the phi > 0 region alpha_L/C7ax). Custom ones take any labelling function.

Dihedrals follow the IUPAC sign convention (as mdtraj); the atoms of phi (C', N, CA, C) and psi
(N, CA, C, N') are found by names and bonds with ``flows.zmatrix.backbone_dihedrals``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np


def dihedrals(positions: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Dihedral angles (frames, k) in radians in (-pi, pi] of atom quadruples ``quads`` (k, 4) for
    positions (frames, N, 3) nm (IUPAC sign: mdtraj's ``compute_dihedrals``)."""
    x = np.asarray(positions, dtype=np.float64)
    quads = np.asarray(quads, dtype=np.int64).reshape(-1, 4)
    if x.ndim == 2:
        x = x[None]
    b1 = x[:, quads[:, 1]] - x[:, quads[:, 0]]
    b2 = x[:, quads[:, 2]] - x[:, quads[:, 1]]
    b3 = x[:, quads[:, 3]] - x[:, quads[:, 2]]
    c1 = np.cross(b2, b3)
    c2 = np.cross(b1, b2)
    p1 = (b1 * c1).sum(-1) * np.linalg.norm(b2, axis=-1)
    p2 = (c1 * c2).sum(-1)
    return np.arctan2(p1, p2)


def backbone_quads(topology) -> np.ndarray:
    """(2, 4) atom indices of the one phi and one psi of a capped residue (an OpenMM topology);
    ValueError when the molecule does not have exactly one of each."""
    from ..flows.zmatrix import backbone_dihedrals, zmatrix_from_topology

    named = backbone_dihedrals(zmatrix_from_topology(topology))
    if len(named["phi"]) != 1 or len(named["psi"]) != 1:
        raise ValueError(f"the built-in states need exactly one backbone phi and psi, found "
                         f"{len(named['phi'])} and {len(named['psi'])}")
    return np.array([named["phi"][0], named["psi"][0]], dtype=np.int64)


@dataclass(frozen=True)
class StateDefinition:
    """States ``names`` and ``label(phi, psi) -> labels`` (ints into ``names``, -1: none), angles in rad."""

    name: str
    names: Tuple[str, ...]
    label: Callable[[np.ndarray, np.ndarray], np.ndarray]
    description: str = ""


def _phi_sign(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    return (np.asarray(phi) > 0).astype(np.int64)


# alpha_R: phi < 0 and psi in (-2.2, 1.0) rad (about -125 to 57 degrees); beta/PII: phi < 0 otherwise
# (psi ~ 2-3 rad and the wrap to psi ~ -pi); phi > 0: alpha_L and C7ax together.
ALPHA_R_PSI = (-2.2, 1.0)


def _basins(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    phi, psi = np.asarray(phi), np.asarray(psi)
    alpha = (psi > ALPHA_R_PSI[0]) & (psi < ALPHA_R_PSI[1])
    return np.where(phi > 0, 2, np.where(alpha, 1, 0)).astype(np.int64)


DEFINITIONS: Dict[str, StateDefinition] = {
    "phi": StateDefinition("phi", ("phi<0", "phi>0"), _phi_sign, "sign of the backbone phi"),
    "basins": StateDefinition("basins", ("beta", "alpha_R", "phi>0"), _basins,
                              f"phi < 0 with psi in {ALPHA_R_PSI} rad: alpha_R, else beta/PII; phi > 0: "
                              "alpha_L + C7ax"),
}


class StateLabeller:
    """Labels frames of one molecule: ``labeller(positions (n, N, 3) nm) -> (labels (n,), phi_psi (n, 2))``."""

    def __init__(self, topology, definition: StateDefinition):
        self.definition = definition
        self.quads = backbone_quads(topology)

    @property
    def names(self) -> Tuple[str, ...]:
        return self.definition.names

    def phi_psi(self, positions: np.ndarray) -> np.ndarray:
        return dihedrals(positions, self.quads)

    def __call__(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        angles = self.phi_psi(positions)
        return self.definition.label(angles[:, 0], angles[:, 1]), angles


def get_definition(name: str) -> StateDefinition:
    try:
        return DEFINITIONS[name]
    except KeyError:
        raise ValueError(f"unknown states {name!r}; choose from {', '.join(DEFINITIONS)}") from None
