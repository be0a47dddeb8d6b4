"""Health checks of an MD run (``smoothflow md``, :func:`md.run.run_md`, ``analysis.nve``, the demo).

A flow's soft walls keep energies finite far outside its data, so "the energy is not NaN" says
little. Every check compares the current state with the start structure and the previous check:

* **energy jump**: ``|Epot - Epot(previous check)|`` above ``max_energy_jump`` kJ/mol (default
  ``max(1000, 5 kT per degree of freedom)``; an equilibrium run moves by a few kT per check);
* **temperature runaway**: the instantaneous kinetic temperature above ``max_temperature`` K
  (default 3x the run's temperature; a 22-atom molecule fluctuates by ~20%);
* **bonds** (the topology's bond graph): any bond outside ``bond_factor`` = (0.5, 1.5) times its
  length in the start structure;
* **chirality**: every atom with four bonded neighbours (sp3 centres: the C-alpha, methyl carbons)
  keeps the sign of the signed volume ``det[n1 - c, n2 - c, n3 - c]`` it has in the start
  structure (centres that start nearly planar are skipped);
* non-finite energies or positions.

A failed check is fatal: :class:`MDHealthError` (exit code 1 in the CLI). Two conditions only warn
(:class:`~openmm_smoothflow.errors.SmoothflowWarning`): configurations outside the model's support
(a bond or angle outside the trained IC ranges, ``BoltzmannGenerator.count_outside``) and a run
temperature more than 10% away from the model's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import RunFailed
from ..units import kT

MIN_ENERGY_JUMP_KJMOL = 1000.0
ENERGY_JUMP_KT_PER_DOF = 5.0
TEMPERATURE_FACTOR = 3.0
BOND_FACTOR = (0.5, 1.5)
PLANAR_TOLERANCE = 0.1      # |det| / (product of the three bond lengths) below this at the start: not a stereocentre
TEMPERATURE_WARN_FRACTION = 0.1


class MDHealthError(RunFailed):
    """An MD run left the physical range; ``step``, ``reason``, ``last_good_step`` and ``files`` (the
    last good state written for inspection: PDB and OpenMM state XML) say where and what."""

    def __init__(self, message: str, step: int = -1, reason: str = "", last_good_step: int = -1,
                 files: Sequence[str] = ()):
        super().__init__(message)
        self.step, self.reason, self.last_good_step, self.files = step, reason, last_good_step, list(files)


@dataclass
class HealthLimits:
    """Bounds of :class:`HealthMonitor`; ``None``: the default described in the module docstring."""

    max_energy_jump: Optional[float] = None     # kJ/mol between two checks
    max_temperature: Optional[float] = None     # K
    bond_factor: Tuple[float, float] = BOND_FACTOR
    chirality: bool = True


def bond_graph(topology) -> np.ndarray:
    """(n_bonds, 2) int atom indices of the topology's bonds."""
    return np.array([(b[0].index, b[1].index) for b in topology.bonds()], dtype=np.int64).reshape(-1, 2)


def stereocentres(topology) -> np.ndarray:
    """(n, 4) int: each atom with exactly four bonded neighbours, then its first three neighbours (by index)."""
    neighbours: List[List[int]] = [[] for _ in range(topology.getNumAtoms())]
    for i, j in bond_graph(topology):
        neighbours[i].append(int(j))
        neighbours[j].append(int(i))
    rows = [[c] + sorted(n)[:3] for c, n in enumerate(neighbours) if len(n) == 4]
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def signed_volumes(positions: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """det[n1 - c, n2 - c, n3 - c] / (|n1 - c| |n2 - c| |n3 - c|) per centre row (dimensionless)."""
    c = positions[centres[:, 0]]
    v = np.stack([positions[centres[:, k]] - c for k in (1, 2, 3)], axis=1)  # (n, 3, 3)
    return np.linalg.det(v) / np.prod(np.linalg.norm(v, axis=2), axis=1)


def kinetic_dof(system) -> int:
    """Degrees of freedom of the kinetic temperature: 3 per massive particle, minus constraints and
    3 for a CMMotionRemover."""
    import openmm

    dof = sum(3 for i in range(system.getNumParticles()) if system.getParticleMass(i)._value > 0)
    dof -= system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return max(dof, 1)


class HealthMonitor:
    """Checks MD states against the start structure ``positions`` (N, 3) nm of ``topology``.

    ``temperature`` K is the run's (thermostat or initial velocities); ``n_dof`` the kinetic degrees
    of freedom (:func:`kinetic_dof`). ``outside`` (optional): positions (N, 3) -> True when outside
    the model's support; ``model_temperature`` K (optional) for the temperature warning; ``warn``
    receives each warning's text once.
    """

    def __init__(self, topology, positions: np.ndarray, temperature: float, n_dof: int,
                 limits: Optional[HealthLimits] = None, outside: Optional[Callable[[np.ndarray], bool]] = None,
                 model_temperature: Optional[float] = None, warn: Optional[Callable[[str], None]] = None):
        self.limits = limits or HealthLimits()
        lo, hi = self.limits.bond_factor
        if not 0 < lo < 1 < hi:
            raise ValueError(f"bond_factor must be (low < 1 < high), got {self.limits.bond_factor}")
        self.names = [f"{a.residue.name}{a.residue.id}:{a.name}" for a in topology.atoms()]
        x = np.asarray(positions, dtype=np.float64)
        self.bonds = bond_graph(topology)
        self.ref_lengths = np.linalg.norm(x[self.bonds[:, 0]] - x[self.bonds[:, 1]], axis=1)
        centres = stereocentres(topology) if self.limits.chirality else np.zeros((0, 4), np.int64)
        volumes = signed_volumes(x, centres) if len(centres) else np.zeros(0)
        keep = np.abs(volumes) > PLANAR_TOLERANCE
        self.centres, self.ref_signs = centres[keep], np.sign(volumes[keep])
        self.temperature, self.n_dof = float(temperature), int(n_dof)
        self.max_jump = self.limits.max_energy_jump or max(MIN_ENERGY_JUMP_KJMOL,
                                                           ENERGY_JUMP_KT_PER_DOF * kT(temperature) * n_dof)
        self.max_temperature = self.limits.max_temperature or TEMPERATURE_FACTOR * self.temperature
        self.outside, self.warn = outside, warn or (lambda text: None)
        self.model_temperature = model_temperature
        self.previous_epot: Optional[float] = None
        self.checks = self.outside_frames = 0
        self.temperatures: List[float] = []
        if model_temperature and abs(temperature - model_temperature) > TEMPERATURE_WARN_FRACTION * model_temperature:
            self.warn(f"MD at {temperature:g} K, but the model was trained at {model_temperature:g} K: its "
                      f"energy is a free energy at {model_temperature:g} K and may be unreliable here")

    def instantaneous_temperature(self, ekin_kjmol: float) -> float:
        """K from the kinetic energy (kJ/mol)."""
        return 2.0 * ekin_kjmol / (self.n_dof * kT(1.0))

    def check(self, step: int, positions: np.ndarray, epot: float, ekin: float) -> Optional[str]:
        """None if the state at ``step`` is healthy, else the reason (one line). Energies kJ/mol."""
        x = np.asarray(positions, dtype=np.float64)
        if not (math.isfinite(epot) and math.isfinite(ekin) and np.isfinite(x).all()):
            return f"non-finite energy or positions (Epot {epot:.4g} kJ/mol)"
        if self.previous_epot is not None and abs(epot - self.previous_epot) > self.max_jump:
            return (f"potential energy jumped from {self.previous_epot:.6g} to {epot:.6g} kJ/mol "
                    f"(bound {self.max_jump:.4g} kJ/mol between checks)")
        temperature = self.instantaneous_temperature(ekin)
        if temperature > self.max_temperature:
            return f"temperature ran away: {temperature:.4g} K (bound {self.max_temperature:.4g} K)"
        if len(self.bonds):
            ratio = np.linalg.norm(x[self.bonds[:, 0]] - x[self.bonds[:, 1]], axis=1) / self.ref_lengths
            lo, hi = self.limits.bond_factor
            bad = np.flatnonzero((ratio < lo) | (ratio > hi))
            if len(bad):
                i, j = self.bonds[bad[0]]
                return (f"bond {self.names[i]}-{self.names[j]} is {ratio[bad[0]]:.2f}x its start length "
                        f"{self.ref_lengths[bad[0]]:.4f} nm (allowed {lo}x-{hi}x; {len(bad)} bond(s) out of range)")
        if len(self.centres):
            flipped = np.flatnonzero(np.sign(signed_volumes(x, self.centres)) != self.ref_signs)
            if len(flipped):
                return (f"chirality of {self.names[self.centres[flipped[0], 0]]} inverted "
                        f"({len(flipped)} centre(s) inverted relative to the start structure)")
        self.previous_epot = epot
        self.checks += 1
        self.temperatures.append(temperature)
        if self.outside is not None and self.outside(x):
            if self.outside_frames == 0:
                self.warn(f"step {step}: the run left the model's support (a bond or angle outside the "
                          "trained ranges: there the energy is a soft wall, not learnt from data)")
            self.outside_frames += 1
        return None

    def summary_warnings(self) -> List[str]:
        """Warnings about the run as a whole (mean temperature far from the model's; frames outside)."""
        out = []
        if self.outside_frames:
            out.append(f"{self.outside_frames} of {self.checks} checked frames were outside the model's support")
        if self.model_temperature and len(self.temperatures) >= 10:
            mean = float(np.mean(self.temperatures))
            if abs(mean - self.model_temperature) > TEMPERATURE_WARN_FRACTION * self.model_temperature:
                out.append(f"mean temperature {mean:.1f} K is far from the model's {self.model_temperature:g} K")
        return out
