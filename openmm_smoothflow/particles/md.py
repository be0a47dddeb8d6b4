"""OpenMM MD of the particle systems with the exact potential or an exported flow (TorchForce).

Both potentials run in the same OpenMM engine (Reference platform, float64): the exact one as the
CustomForce System of :mod:`.systems`, the flow as :class:`openmm_smoothflow.potential.FlowPotential`'s
TorchForce on the same argon particles. DW4 runs in the plane: its energies ignore z, z forces are
exactly zero, and the initial z positions and velocities are zero, so z stays 0 (checked in
:func:`nve`). Degrees of freedom: M d - d (momentum is conserved and starts at zero).

The exported flow energy contains ``torch.autograd.grad`` (the exact Jacobian); TorchScript's fuser
re-specialises such graphs for seconds per call during its first calls, so :func:`no_fusion` turns
fusion off around flow MD (same speed afterwards, no warm-up).
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterator

import numpy as np

from ..units import PathLike
from .systems import UNITS, ParticleSystem


@contextlib.contextmanager
def no_fusion() -> Iterator[None]:
    """Temporarily turn off TorchScript's fusion (process-wide; the previous strategy is restored).

    The profiling executor otherwise spends seconds per call on the first calls re-specialising and
    fusing the exported graph (it contains ``torch.autograd.grad``) and is no faster afterwards.
    """
    import torch

    previous = torch.jit.set_fusion_strategy([("STATIC", 0), ("DYNAMIC", 0)])
    try:
        yield
    finally:
        torch.jit.set_fusion_strategy(previous)


def flow_system(system: ParticleSystem, model_path: PathLike):
    """A System of the particles with the exported flow as its only force (TorchForce backend)."""
    from ..potential import FlowPotential

    potential = FlowPotential(model_path)
    if potential.metadata.get("system") != system.name:
        raise ValueError(f"{model_path} is a {potential.metadata.get('system')!r} model, not {system.name}")
    return potential.createSystem(system.topology(), removeCMMotion=False)


def maxwell_boltzmann(system: ParticleSystem, seed: int) -> np.ndarray:
    """Velocities (M, 3) nm/ps at the reduced temperature 1 (z zero for 2-D), zero total momentum."""
    from ..units import kT

    rng = np.random.default_rng(seed)
    sigma = np.sqrt(kT(UNITS.temperature) / UNITS.mass_dalton)  # nm/ps (kJ/mol / amu = nm^2/ps^2)
    v = np.zeros((system.n_particles, 3))
    v[:, : system.dim] = sigma * rng.standard_normal((system.n_particles, system.dim))
    v[:, : system.dim] -= v[:, : system.dim].mean(0)
    return v


def nve(omm_system, system: ParticleSystem, positions_nm: np.ndarray, velocities: np.ndarray, dt_ps: float,
        n_steps: int, report_every: int = 1, platform: str = "Reference") -> Dict[str, np.ndarray]:
    """Velocity Verlet from the given start; energies in kT every ``report_every`` steps, ms per step."""
    import openmm

    integrator = openmm.VerletIntegrator(dt_ps)
    context = openmm.Context(omm_system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions_nm)
    context.setVelocities(velocities)
    kt = UNITS.energy_kjmol
    rows, max_z = [], 0.0
    t0 = time.perf_counter()
    for k in range(0, n_steps + 1, report_every):
        if k:
            integrator.step(report_every)
        state = context.getState(getEnergy=True, getPositions=system.dim == 2)
        epot = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole) / kt
        ekin = state.getKineticEnergy().value_in_unit(openmm.unit.kilojoule_per_mole) / kt
        rows.append((k * dt_ps, epot, ekin))
        if system.dim == 2:
            max_z = max(max_z, float(np.abs(state.getPositions(asNumpy=True)._value[:, 2]).max()))
        if not np.isfinite(epot + ekin):
            break
    seconds = time.perf_counter() - t0
    arr = np.array(rows)
    return {"time_ps": arr[:, 0], "epot": arr[:, 1], "ekin": arr[:, 2], "etot": arr[:, 1] + arr[:, 2],
            "ms_per_step": 1e3 * seconds / max(n_steps, 1), "max_abs_z_nm": max_z}


def nve_stats(run: Dict[str, np.ndarray], dof: int, blowup_per_dof: float = 1.0) -> Dict[str, float]:
    """std(E_tot)/dof and drift (kT per dof per ps, least squares), blow-up if non-finite or a jump."""
    etot, t = run["etot"], run["time_ps"]
    finite = bool(np.isfinite(etot).all()) and len(etot) > 1
    dev = (etot - etot[0]) / dof if finite else np.array([np.inf])
    drift = float(np.polyfit(t, etot / dof, 1)[0]) if finite else float("nan")
    return {"std_etot_per_dof_kT": float(np.std(etot) / dof) if finite else float("nan"),
            "drift_kT_per_dof_per_ps": drift, "max_abs_dev_per_dof_kT": float(np.abs(dev).max()),
            "blowup": bool((not finite) or np.abs(dev).max() > blowup_per_dof),
            "mean_ekin_per_dof_kT": float(np.mean(run["ekin"]) / dof) if finite else float("nan"),
            "ms_per_step": float(run["ms_per_step"])}


def kish_ess(log_w: np.ndarray) -> float:
    """Kish effective sample size fraction (sum w)^2 / (n sum w^2) of log importance weights."""
    log_w = np.asarray(log_w, dtype=np.float64)
    log_w = log_w[np.isfinite(log_w)] if np.isfinite(log_w).any() else log_w
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (len(w) * (w ** 2).sum()))


def flow_samples_ess(flow, system: ParticleSystem, n: int, seed: int = 0, batch_size: int = 50,
                     newton_steps: int = 20) -> Dict[str, float]:
    """Sample the flow (exact inverse of the map, :meth:`.cnf.EquivariantCNF.sample`) and reweight to the exact energy (Kish ESS)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    xs, logq, residual = [], [], 0.0
    for i in range(0, n, batch_size):
        x, lq = flow.sample(min(batch_size, n - i), gen, newton_steps=newton_steps)
        residual = max(residual, flow.last_inversion_residual)
        xs.append(x)
        logq.append(lq)
    x, lq = torch.cat(xs), torch.cat(logq)
    u = system.energy(x.double())
    log_w = (-u - lq.double()).numpy()
    return {"n": n, "kish_ess_fraction": kish_ess(log_w), "mean_exact_energy_kT": float(u.mean()),
            "n_nonfinite": int((~np.isfinite(log_w)).sum()), "max_inversion_residual": residual}
