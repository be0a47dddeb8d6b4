"""Backbone dihedrals (phi, psi) of frames, per residue, for Ramachandran plots (mdtraj).

The dihedrals are those :func:`flows.zmatrix.backbone_dihedrals` names on the molecule's topology:
phi (C', N, CA, C) and psi (N, CA, C, N') of every residue that has both (capped peptides: every
residue between the caps).
"""
from typing import Dict, List, Tuple

import numpy as np


def backbone_pairs(topology) -> List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]:
    """``(label, phi atoms, psi atoms)`` per residue with both dihedrals, label e.g. ``"ALA2"``."""
    from ..flows.zmatrix import backbone_dihedrals, zmatrix_from_topology

    named = backbone_dihedrals(zmatrix_from_topology(topology))
    psi_by_ca = {quad[1]: quad for quad in named["psi"]}
    atoms = list(topology.atoms())
    pairs = []
    for phi in named["phi"]:
        psi = psi_by_ca.get(phi[2])
        if psi is not None:
            residue = atoms[phi[2]].residue
            pairs.append((f"{residue.name}{residue.index + 1}", tuple(phi), tuple(psi)))
    return pairs


def residue_phi_psi(positions: np.ndarray, topology) -> Dict[str, np.ndarray]:
    """Per residue label (``"ALA2"``): (phi, psi) in radians, (frames, 2), of positions (frames, N, 3) nm
    on an OpenMM ``topology``; empty when the molecule has no backbone."""
    import mdtraj

    pairs = backbone_pairs(topology)
    if not pairs:
        return {}
    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32), mdtraj.Topology.from_openmm(topology))
    angles = mdtraj.compute_dihedrals(traj, np.array([q for _, phi, psi in pairs for q in (phi, psi)]))
    return {label: angles[:, 2 * i:2 * i + 2] for i, (label, _, _) in enumerate(pairs)}


def phi_psi(positions: np.ndarray, topology) -> np.ndarray:
    """Backbone (phi, psi) in radians, (frames, 2), of the first residue that has both (see
    :func:`residue_phi_psi` for all of them); ValueError when the molecule has none."""
    per_residue = residue_phi_psi(positions, topology)
    if not per_residue:
        raise ValueError("the molecule has no backbone phi/psi pair (atoms named C, N, CA, C, N bonded in a chain)")
    return next(iter(per_residue.values()))
