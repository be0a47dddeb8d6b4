"""Backbone dihedrals (phi, psi) of frames, for Ramachandran plots (mdtraj)."""
import numpy as np


def phi_psi(positions: np.ndarray, topology) -> np.ndarray:
    """Backbone (phi, psi) in radians, (frames, 2), of positions (frames, N, 3) nm on an OpenMM ``topology``."""
    import mdtraj

    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32), mdtraj.Topology.from_openmm(topology))
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    return np.stack([phi[:, 0], psi[:, 0]], axis=1)
