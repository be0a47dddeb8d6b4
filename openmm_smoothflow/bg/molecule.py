"""A molecule as a :class:`~openmm_smoothflow.bg.mcmc.ChainSystem`: flow proposals scored by the
classical force field (batched OpenMM energies, ``training.target.OpenMMTarget``), Langevin MD of the
same force field as the local move, states from the backbone dihedrals.

Energies: the target's reduced energy u = E_OpenMM / kT and the flow's ``energy`` = -log q (both kT).
The state space is the stereoisomer of the start structure: a proposal that inverts a stereocentre
(signed volume of an atom with four bonded neighbours, ``md.health``) gets weight 0, as do proposals
with a non-finite target energy; MD never inverts one, so this is the ensemble MD samples. A state
outside the flow's support (a bond or angle outside its ranges) has q = 0: ``log w = +inf``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..md.health import PLANAR_TOLERANCE, signed_volumes, stereocentres
from ..units import kT
from .reweight import log_weights
from .states import StateDefinition, StateLabeller


class MoleculeSystem:
    """Flow-MCMC of one molecule: ``generator`` (a BoltzmannGenerator, float64), OpenMM ``topology``,
    start ``positions`` (N, 3) nm, ``temperature`` K, ``states`` (a StateDefinition). ``system``: the
    classical System (default ``md.systems.classical_system``); ``n_workers`` worker processes for the
    proposals' energies (0: in process); MD with ``LangevinMiddleIntegrator`` (``friction`` 1/ps,
    ``timestep_fs`` fs) on ``platform``. Use as a context manager (or :meth:`close`)."""

    def __init__(self, generator, topology, positions: np.ndarray, temperature: float, states: StateDefinition,
                 system=None, n_workers: int = 0, platform: str = "Reference", friction: float = 1.0,
                 timestep_fs: float = 1.0, seed: int = 0):
        import openmm
        from openmm import unit

        from ..md import systems
        from ..training.target import OpenMMTarget

        self.generator = generator
        self.temperature = float(temperature)
        self.kt = kT(self.temperature)
        self.labeller = StateLabeller(topology, states)
        self.system = systems.classical_system(topology) if system is None else system
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self.system.getNumParticles(), 3):
            raise ValueError(f"positions must be ({self.system.getNumParticles()}, 3) nm, got {positions.shape}")
        self.centres = stereocentres(topology)
        volumes = signed_volumes(positions, self.centres)
        keep = np.abs(volumes) >= PLANAR_TOLERANCE
        self.centres, self.chirality = self.centres[keep], np.sign(volumes[keep])
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator().manual_seed(int(seed))
        self.target = OpenMMTarget(self.system, self.temperature, n_workers=n_workers, platform=platform)
        self.integrator = openmm.LangevinMiddleIntegrator(self.temperature * unit.kelvin, friction / unit.picosecond,
                                                          timestep_fs * unit.femtoseconds)
        self.integrator.setRandomNumberSeed(int(self.rng.integers(1, 2**30)))
        self.context = openmm.Context(self.system, self.integrator, systems.get_platform(platform))
        self.context.setPositions(positions)
        self._cached: Optional[Tuple[np.ndarray, float]] = None  # (positions, u kT) of the MD state

    # ---- pieces ---------------------------------------------------------------------------------------
    def flow_log_q(self, x: np.ndarray) -> np.ndarray:
        """log q (n,) of positions (n, N, 3) nm; -inf outside the flow's support."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
        with torch.no_grad():
            log_q = -self.generator.energy(xt).numpy()
        if self.generator.count_outside(xt):
            outside = np.array([self.generator.count_outside(xt[i:i + 1]) > 0 for i in range(len(xt))])
            log_q = np.where(outside, -np.inf, log_q)
        return log_q

    def chirality_ok(self, x: np.ndarray) -> np.ndarray:
        """(n,) bool: every stereocentre of the start structure keeps its handedness."""
        if not len(self.centres):
            return np.ones(len(x), dtype=bool)
        return np.array([np.array_equal(np.sign(signed_volumes(f, self.centres)), self.chirality) for f in x])

    def minimize(self) -> np.ndarray:
        import openmm

        openmm.LocalEnergyMinimizer.minimize(self.context)
        return self._read_state()

    def _read_state(self) -> np.ndarray:
        from openmm import unit

        state = self.context.getState(getPositions=True, getEnergy=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        self._cached = (x, state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / self.kt)
        return x

    # ---- ChainSystem ----------------------------------------------------------------------------------
    def propose(self, n: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
        with torch.no_grad():
            xs, log_q = self.generator.sample(n, generator=self.torch_rng)
        u, _ = self.target.energy_and_force(xs)
        xs, u, log_q = xs.numpy(), u.numpy(), log_q.numpy()
        inside = np.ones(len(xs), dtype=bool)
        if self.generator.count_outside(torch.as_tensor(xs)):  # samples lie inside by construction
            inside = np.isfinite(self.flow_log_q(xs))
        chiral = self.chirality_ok(xs)
        lw = np.where(chiral & inside, log_weights(u, log_q), -np.inf)
        reasons = {"nonfinite_energy": int((~np.isfinite(u)).sum()), "outside_support": int((~inside).sum()),
                   "nonfinite_flow_density": int((~np.isfinite(log_q)).sum()),
                   "inverted_stereocentre": int((~chiral).sum())}
        return xs, lw, reasons

    def log_weight(self, x: np.ndarray) -> float:
        if self._cached is not None and self._cached[0] is x:
            u = self._cached[1]
        else:
            u = float(self.target.energy_and_force(x[None])[0][0])
        if not self.chirality_ok(x[None])[0]:
            return float("-inf")
        return float(log_weights(np.array([u]), self.flow_log_q(x[None]))[0])

    def local(self, x: np.ndarray, n_steps: int, moved: bool) -> np.ndarray:
        from openmm import unit

        if moved or self._cached is None or self._cached[0] is not x:
            self.context.setPositions(x)
            self.context.setVelocitiesToTemperature(self.temperature * unit.kelvin, int(self.rng.integers(1, 2**30)))
        self.integrator.step(int(n_steps))
        return self._read_state()

    def observe(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return self.labeller(x)

    def close(self) -> None:
        self.target.close()

    def __enter__(self) -> "MoleculeSystem":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
