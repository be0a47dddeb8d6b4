"""The particle benchmarks DW4 and LJ13: exact energies in torch and as OpenMM Systems.

Both are written in reduced units (the papers': bgflow's ``MultiDoubleWellPotential`` and
``LennardJonesPotential``, temperature 1). The ONE mapping onto OpenMM units is :data:`UNITS`: the
particles are argon atoms, 1 reduced length = argon's LJ r_m = 2^(1/6) * 0.3405 nm, 1 reduced energy =
argon's eps = k_B * 119.8 K, and reduced temperature 1 = 119.8 K, so that u / kT is the reduced energy.

- **DW4**: 4 particles in 2-D, u = sum_{i<j} a (d_ij - d0)^4 + b (d_ij - d0)^2 + c, with a = 0.9,
  b = -4, c = 0, d0 = 4. In OpenMM's 3-D engine the energy reads x and y only (the z coordinates do not
  enter it, so z forces are exactly zero); start with z = 0 and zero z velocities and the motion stays
  in the plane (see :func:`planar_velocities`).
- **LJ13**: 13 particles in 3-D, u = sum_{i<j} eps [(r_m/d)^12 - 2 (r_m/d)^6] + 0.5 sum_i |x_i - x_mean|^2
  with eps = r_m = 1. The harmonic term is written exactly as a pair sum,
  0.5 sum_i |x_i - x_mean|^2 = (1 / 2M) sum_{i<j} |x_i - x_j|^2, so one CustomBondForce holds it all.

Torch energies take reduced positions (B, M, d) and return (B,) reduced energies (= u / kT).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch
from torch import Tensor

# --- the one reduced-unit mapping ----------------------------------------------------------------------
ARGON_SIGMA_NM = 0.3405
ARGON_EPS_KELVIN = 119.8
ARGON_MASS_DALTON = 39.948


@dataclass(frozen=True)
class ReducedUnits:
    """1 reduced length = ``length_nm`` nm, 1 reduced energy = k_B * ``temperature`` (kJ/mol)."""

    length_nm: float
    temperature: float  # K; reduced temperature 1
    mass_dalton: float

    @property
    def energy_kjmol(self) -> float:
        from ..units import kT

        return kT(self.temperature)

    @property
    def time_ps(self) -> float:
        """The reduced time unit tau = L sqrt(m / eps) in ps (amu nm^2 ps^-2 = kJ/mol)."""
        return self.length_nm * float(np.sqrt(self.mass_dalton / self.energy_kjmol))


UNITS = ReducedUnits(length_nm=2.0 ** (1.0 / 6.0) * ARGON_SIGMA_NM, temperature=ARGON_EPS_KELVIN,
                     mass_dalton=ARGON_MASS_DALTON)


@dataclass(frozen=True)
class ParticleSystem:
    """One benchmark: M identical particles in ``dim`` dimensions with a reduced pair energy."""

    name: str
    n_particles: int
    dim: int
    params: Dict[str, float]

    @property
    def dof(self) -> int:
        """Dimension of the centre-of-mass-free configuration space, (M - 1) * dim."""
        return (self.n_particles - 1) * self.dim

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energy u(x) = U / kT of reduced positions (B, M, dim) -> (B,)."""
        if x.shape[-2:] != (self.n_particles, self.dim):
            raise ValueError(f"{self.name} expects positions (B, {self.n_particles}, {self.dim}), got {tuple(x.shape)}")
        i, j = torch.triu_indices(self.n_particles, self.n_particles, 1, device=x.device)
        d = (x[..., i, :] - x[..., j, :]).pow(2).sum(-1).sqrt()
        p = self.params
        if self.name == "dw4":
            s = d - p["d0"]
            return (p["a"] * s ** 4 + p["b"] * s ** 2 + p["c"]).sum(-1)
        inv6 = (p["rm"] / d) ** 6
        lj = p["eps"] * (inv6 * inv6 - 2.0 * inv6)
        centred = x - x.mean(-2, keepdim=True)
        return lj.sum(-1) + 0.5 * p["oscillator"] * centred.pow(2).sum((-2, -1))

    def energy_expression(self) -> str:
        """The OpenMM pair energy (kJ/mol) of one pair, in nm; the same formula as :meth:`energy`."""
        L, E, p = UNITS.length_nm, UNITS.energy_kjmol, self.params
        if self.name == "dw4":
            return (f"{E!r}*({p['a']!r}*s^4 + {p['b']!r}*s^2 + {p['c']!r}); s = r/{L!r} - {p['d0']!r}; "
                    "r = sqrt((x1-x2)^2 + (y1-y2)^2)")
        k = p["oscillator"] / (2.0 * self.n_particles)
        return (f"{E!r}*({p['eps']!r}*(q^2 - 2*q) + {k!r}*rr^2); q = ({p['rm']!r}/rr)^6; rr = r/{L!r}")

    def openmm_system(self):
        """The exact potential as an ``openmm.System`` (argon masses, no cut-off, no periodicity)."""
        import openmm

        system = openmm.System()
        for _ in range(self.n_particles):
            system.addParticle(UNITS.mass_dalton)
        if self.name == "dw4":  # x and y only: a CustomCompoundBondForce sees the coordinates
            force = openmm.CustomCompoundBondForce(2, self.energy_expression())
        else:
            force = openmm.CustomBondForce(self.energy_expression())
        for i in range(self.n_particles):
            for j in range(i + 1, self.n_particles):
                force.addBond([i, j], []) if self.name == "dw4" else force.addBond(i, j, [])
        force.setName(f"{self.name}-exact")
        system.addForce(force)
        return system

    def topology(self):
        """An ``openmm.app.Topology`` of M argon atoms (one residue each)."""
        from openmm import app

        top = app.Topology()
        chain = top.addChain()
        for k in range(self.n_particles):
            top.addAtom("Ar", app.element.argon, top.addResidue("AR", chain))
        return top

    def to_nm(self, x: np.ndarray) -> np.ndarray:
        """Reduced positions (..., M, dim) -> OpenMM positions (..., M, 3) in nm (z = 0 for 2-D)."""
        x = np.asarray(x, dtype=np.float64) * UNITS.length_nm
        if self.dim == 3:
            return x
        return np.concatenate([x, np.zeros(x.shape[:-1] + (3 - self.dim,))], axis=-1)

    def from_nm(self, positions: np.ndarray) -> np.ndarray:
        """OpenMM positions (..., M, 3) nm -> reduced positions (..., M, dim) (drops z for 2-D)."""
        return np.asarray(positions, dtype=np.float64)[..., : self.dim] / UNITS.length_nm


DW4 = ParticleSystem("dw4", 4, 2, {"a": 0.9, "b": -4.0, "c": 0.0, "d0": 4.0})
LJ13 = ParticleSystem("lj13", 13, 3, {"eps": 1.0, "rm": 1.0, "oscillator": 1.0})
SYSTEMS: Dict[str, ParticleSystem] = {"dw4": DW4, "lj13": LJ13}


def get_system(name: str) -> ParticleSystem:
    if name not in SYSTEMS:
        raise ValueError(f"unknown particle system {name!r}; choose from {sorted(SYSTEMS)}")
    return SYSTEMS[name]


def remove_mean(x: Tensor) -> Tensor:
    """Subtract the centre of mass (all particles equal) from positions (..., M, d)."""
    return x - x.mean(-2, keepdim=True)


def planar_velocities(system: ParticleSystem, velocities: np.ndarray) -> np.ndarray:
    """Zero the z velocities of a 2-D system (and its in-plane centre-of-mass velocity); (M, 3) nm/ps."""
    v = np.array(velocities, dtype=np.float64)
    if system.dim == 2:
        v[:, 2] = 0.0
    v[:, : system.dim] -= v[:, : system.dim].mean(0)
    return v

