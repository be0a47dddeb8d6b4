"""Boltzmann-generator sampling of a molecule, end to end: flow-MCMC (or plain MD with the same
bookkeeping) and the summary of a chain: acceptance, autocorrelation, populations and free energies
with error bars, effective samples per second, and the importance-reweighting estimates of the
proposals that the chain drew anyway.

Error bars: chain estimates from the integrated autocorrelation time of each state indicator (and of
the linearised log ratio for free energies; ``autocorr``), reweighting estimates by the delta method
(``reweight``). Energies kJ/mol, times s (wall clock) and ps (simulated).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import numpy as np

from . import autocorr
from .mcmc import ChainResult, run_chain
from .reweight import reweighting_summary, state_estimates
from .states import StateDefinition


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


def series_summary(labels: np.ndarray, names: Sequence[str], kt: float, wall_s: Optional[float] = None,
                   spacing: str = "moves", cpu_s: Optional[float] = None) -> Dict[str, Any]:
    """Populations and free energies (kJ/mol, relative to the first state) of a correlated series of
    state labels (a chain or MD frames), with autocorrelation-based error bars; per state the
    integrated autocorrelation time of its indicator (in ``spacing``), how often the series entered it
    (a rare state's estimate rests on that few visits), effective samples, and (with
    ``wall_s`` / ``cpu_s``) effective samples per wall-clock / CPU second. States never or always
    visited have no tau (None)."""
    labels = np.asarray(labels)
    out: Dict[str, Any] = {"n": int(len(labels)), "error_bars": f"sigma * sqrt(tau / n), tau in {spacing} "
                           "(Sokal window), delta method for free energies"}
    out.update(state_estimates(labels, names, kt, se_factor=autocorr.se_factor))
    per_state = {}
    for k, name in enumerate(names):
        indicator = (labels == k).astype(np.float64)
        tau = autocorr.integrated_autocorr_time(indicator) if len(labels) > 1 else float("nan")
        ess = len(labels) / tau if math.isfinite(tau) else 0.0
        entries = int(indicator[0] + ((indicator[1:] == 1) & (indicator[:-1] == 0)).sum()) if len(labels) else 0
        per_state[name] = {"tau": _finite_or_none(tau), "entries": entries, "effective_samples": ess,
                           "effective_samples_per_s": ess / wall_s if wall_s else None,
                           "effective_samples_per_cpu_s": ess / cpu_s if cpu_s else None}
    out["autocorrelation"] = per_state
    return out


def chain_summary(result: ChainResult, names: Sequence[str], kt: float, timestep_fs: float = 1.0) -> Dict[str, Any]:
    """Everything about one chain (JSON-able)."""
    out: Dict[str, Any] = {
        "cycles": result.cycles, "md_steps_per_cycle": result.local_steps, "mh_tests_per_cycle": result.mh_per_cycle,
        "simulated_md_ps": result.cycles * result.local_steps * timestep_fs * 1e-3,
        "wall_s": result.wall_s, "cpu_s": result.cpu_s, "times_s": result.times_s,
        "stopped_early": result.stopped_early,
        "flow_proposals": bool(len(result.proposal_log_w)),
    }
    if len(result.proposal_log_w):
        out.update(mh_tests=int(len(result.accepted)), accepted=int(result.accepted.sum()),
                   acceptance_rate=result.acceptance_rate, proposals_drawn=result.proposals_drawn,
                   zero_weight_proposals=result.invalid)
        out["proposed_by_state"] = {name: int((result.proposal_labels == k).sum()) for k, name in enumerate(names)}
        out["accepted_by_state"] = {name: int(((result.proposal_labels == k) & result.accepted).sum())
                                    for k, name in enumerate(names)}
    out["chain"] = series_summary(result.labels, names, kt, result.wall_s, spacing="cycles", cpu_s=result.cpu_s)
    if len(result.proposal_log_w):
        out["reweighting"] = reweighting_summary(result.proposal_log_w, result.proposal_labels, list(names), kt)
        spent = result.times_s.get("proposals", 0.0)  # drawing and scoring the proposals (flow + OpenMM)
        out["reweighting"]["kish_ess_per_s"] = out["reweighting"]["kish_ess"] / spent if spent > 0 else None
    return out


def sample_molecule(generator, topology, positions: np.ndarray, temperature: float, states: StateDefinition,
                    n_cycles: int, md_steps: int = 100, mh_per_cycle: int = 1, batch: int = 256, seed: int = 0,
                    equilibration_steps: int = 1000, minimize: bool = True, n_workers: int = 0,
                    platform: str = "Reference", timestep_fs: float = 1.0, friction: float = 1.0,
                    max_seconds: Optional[float] = None, max_cpu_seconds: Optional[float] = None,
                    progress: bool = True):
    """Flow-MCMC of a molecule: minimisation and ``equilibration_steps`` of MD from ``positions`` (N, 3)
    nm, then ``n_cycles`` cycles of ``md_steps`` Langevin steps and ``mh_per_cycle`` MH tests
    (:func:`mcmc.run_chain`; ``mh_per_cycle=0``: plain MD, a frame per cycle). Returns
    ``(summary dict, ChainResult)``."""
    from ..progress import progress_bar
    from .molecule import MoleculeSystem

    with MoleculeSystem(generator, topology, positions, temperature, states, n_workers=n_workers, platform=platform,
                        friction=friction, timestep_fs=timestep_fs, seed=seed) as system:
        x = system.minimize() if minimize else np.asarray(positions, dtype=np.float64)
        if equilibration_steps:
            x = system.local(x, equilibration_steps, True)
        bar = progress_bar(total=n_cycles, desc="flow-MCMC" if mh_per_cycle else "MD", unit="cycle",
                           enabled=progress)
        try:
            result = run_chain(system, x, n_cycles, md_steps, mh_per_cycle, batch, seed=seed,
                               max_seconds=max_seconds, max_cpu_seconds=max_cpu_seconds, progress=bar)
        finally:
            bar.close()
    summary = chain_summary(result, states.names, system.kt, timestep_fs)
    summary.update(temperature=float(temperature), kT_kjmol=system.kt, states=states.name,
                   state_names=list(states.names), state_description=states.description, seed=int(seed))
    return summary, result


def json_clean(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python numbers, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
