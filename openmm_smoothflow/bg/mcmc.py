"""Flow-MCMC: independence Metropolis-Hastings with flow proposals, interleaved with a local move
(Langevin MD of the classical force field for molecules) that leaves the target invariant.

From the current state x the move draws x' ~ q independently of x and accepts it with probability
``min(1, w(x') / w(x))``, ``w = exp(-u) / q`` (``reweight.log_weights``); this kernel satisfies
detailed balance with respect to the Boltzmann density exp(-u) (``transition_matrix`` builds it for
a discrete target from the same acceptance code, for the tests). A local move that leaves exp(-u)
invariant (Langevin MD) composed with it leaves it invariant too, so the chain samples the exact
Boltzmann distribution even though q is not; q only sets how fast. A proposal with weight 0 (non-finite
energy, outside the target's state space) is always rejected; a current state the flow cannot propose
(q(x) = 0, ``log w = +inf``) rejects every proposal until the local move brings it back.

Proposals do not depend on the state, so they are drawn and scored in batches (one flow call and one
batched target-energy call per ``batch`` proposals) and used one per MH test; a cycle is one stretch of
the local move followed by ``mh_per_cycle`` MH tests, so the flow density of the current state is
evaluated once per cycle (a single-frame flow energy costs more than a batched proposal).
:func:`run_chain` drives any :class:`ChainSystem`: ``bg.molecule.MoleculeSystem`` (OpenMM) or the
toys of the tests.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Tuple

import numpy as np


def log_acceptance(log_w_current, log_w_proposed):
    """log of the MH acceptance probability min(1, w'/w) from log weights (numpy broadcasting):
    -inf for a proposal of weight 0 (or NaN) and for a current state of weight +inf; 0 (accept) for a
    valid proposal from a current state of weight 0."""
    cur = np.asarray(log_w_current, dtype=np.float64)
    new = np.asarray(log_w_proposed, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.minimum(0.0, new - cur)
    valid = np.isfinite(new) | (new == np.inf)
    out = np.where(cur == -np.inf, 0.0, diff)
    out = np.where(valid & ~(cur == np.inf) & ~np.isnan(cur), out, -np.inf)
    out = np.where(np.isnan(out), -np.inf, out)
    return out if out.ndim else float(out)


def metropolis_accept(log_w_current: float, log_w_proposed: float, rng: np.random.Generator) -> bool:
    """One MH test: accept with probability exp(:func:`log_acceptance`)."""
    a = log_acceptance(log_w_current, log_w_proposed)
    return bool(a == 0.0 or np.log(rng.random()) < a)


def transition_matrix(log_target: np.ndarray, log_proposal: np.ndarray) -> np.ndarray:
    """The exact transition matrix P (K, K) of the independence MH move on K discrete states with
    unnormalised log target ``log_target`` (K,) and normalised proposal ``log_proposal`` (K,):
    P_ij = q_j a(i -> j) for j != i, the rest on the diagonal (from :func:`log_acceptance`)."""
    log_target = np.asarray(log_target, dtype=np.float64)
    q = np.exp(np.asarray(log_proposal, dtype=np.float64))
    lw = log_target - np.log(q)
    p = q[None, :] * np.exp(log_acceptance(lw[:, None], lw[None, :]))
    np.fill_diagonal(p, 0.0)
    np.fill_diagonal(p, 1.0 - p.sum(axis=1))
    return p


class ChainSystem(Protocol):
    """What :func:`run_chain` needs of a target (positions are opaque arrays, one row per state)."""

    def propose(self, n: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
        """n independent proposals (n, ...), their log weights (n,), and counts of weight-0 reasons."""

    def log_weight(self, x: np.ndarray) -> float:
        """log w = -u(x) - log q(x) of one state."""

    def local(self, x: np.ndarray, n_steps: int, moved: bool) -> np.ndarray:
        """``n_steps`` of a target-invariant local move from x (``moved``: x was just set by a jump)."""

    def observe(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """State labels (n,) and features (n, f) (e.g. phi/psi) of states (n, ...)."""


@dataclass
class ChainResult:
    """One chain: per cycle the state's label and features (after the cycle); per MH test whether it
    accepted and its proposal's log weight and label (for reweighting; one proposal per test); counts
    and wall-clock times (s) of the parts."""

    labels: np.ndarray
    features: np.ndarray
    accepted: np.ndarray              # (cycles * mh_per_cycle,) bool; empty without proposals
    proposal_log_w: np.ndarray
    proposal_labels: np.ndarray
    proposal_features: np.ndarray
    invalid: Dict[str, int] = field(default_factory=dict)  # weight-0 reasons over all proposals drawn
    proposals_drawn: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0                # CPU time of this process (OpenMM in-process included, workers not)
    times_s: Dict[str, float] = field(default_factory=dict)
    local_steps: int = 0
    mh_per_cycle: int = 0
    stopped_early: bool = False

    @property
    def cycles(self) -> int:
        return len(self.labels)

    @property
    def acceptance_rate(self) -> float:
        return float(self.accepted.mean()) if len(self.accepted) else float("nan")


def run_chain(system: ChainSystem, x0: np.ndarray, n_cycles: int, local_steps: int = 0, mh_per_cycle: int = 1,
              batch: int = 256, seed: int = 0, max_seconds: Optional[float] = None,
              max_cpu_seconds: Optional[float] = None, progress: Any = None) -> ChainResult:
    """``n_cycles`` cycles of (``local_steps`` local steps, then ``mh_per_cycle`` MH tests with the next
    flow proposals), recording the state after each cycle; ``mh_per_cycle=0``: the local move alone
    (plain MD with the same bookkeeping). Proposals come ``batch`` at a time; one log weight of the
    current state per cycle (after the local move). ``max_seconds`` (wall clock) or ``max_cpu_seconds``
    (this process's CPU time: a fair budget on a shared machine) stop early (``stopped_early``);
    ``progress``: a ``progress.progress_bar`` updated per cycle."""
    if n_cycles < 1 or batch < 1 or local_steps < 0 or mh_per_cycle < 0:
        raise ValueError("need n_cycles >= 1, batch >= 1, local_steps >= 0, mh_per_cycle >= 0")
    if mh_per_cycle == 0 and local_steps == 0:
        raise ValueError("a chain needs local steps or MH moves (local_steps > 0 or mh_per_cycle > 0)")
    rng = np.random.default_rng(seed)
    x = np.asarray(x0)
    times = {"local": 0.0, "proposals": 0.0, "log_weight": 0.0, "observe": 0.0}
    labels: List[np.ndarray] = []
    features: List[np.ndarray] = []
    accepted = np.zeros(n_cycles * mh_per_cycle, dtype=bool)
    prop_lw: List[np.ndarray] = []
    prop_labels: List[np.ndarray] = []
    prop_features: List[np.ndarray] = []
    invalid: Dict[str, int] = {}
    pending: Tuple[np.ndarray, np.ndarray] = (np.empty((0,) + x.shape), np.empty(0))
    used, tests, done, moved = 0, 0, 0, True
    lw = float("nan")
    start, cpu_start = time.perf_counter(), time.process_time()
    for cycle in range(n_cycles):
        if local_steps:
            t = time.perf_counter()
            x = system.local(x, local_steps, moved)
            times["local"] += time.perf_counter() - t
            moved = False
        if mh_per_cycle and (local_steps or cycle == 0):
            t = time.perf_counter()
            lw = system.log_weight(x)
            times["log_weight"] += time.perf_counter() - t
        for _ in range(mh_per_cycle):
            if used == len(pending[1]):
                t = time.perf_counter()
                xs, lws, reasons = system.propose(min(batch, len(accepted) - tests))
                times["proposals"] += time.perf_counter() - t
                for key, value in reasons.items():
                    invalid[key] = invalid.get(key, 0) + int(value)
                t = time.perf_counter()
                lab, feat = system.observe(xs)
                times["observe"] += time.perf_counter() - t
                prop_lw.append(lws)
                prop_labels.append(lab)
                prop_features.append(feat)
                pending, used = (xs, lws), 0
            xp, lwp = pending[0][used], float(pending[1][used])
            used += 1
            if metropolis_accept(lw, lwp, rng):
                x, lw, moved = xp, lwp, True
                accepted[tests] = True
            tests += 1
        t = time.perf_counter()
        lab, feat = system.observe(x[None])
        times["observe"] += time.perf_counter() - t
        labels.append(lab)
        features.append(feat)
        done = cycle + 1
        if progress is not None:
            progress.update(1)
            if mh_per_cycle and (cycle % 50 == 0 or done == n_cycles):
                progress.set_postfix(acceptance=f"{accepted[:tests].mean():.3f}", refresh=False)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        if max_cpu_seconds is not None and time.process_time() - cpu_start > max_cpu_seconds:
            break
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    n_drawn = sum(len(a) for a in prop_lw)

    def cat(parts: List[np.ndarray], empty_shape: Tuple[int, ...]) -> np.ndarray:
        return np.concatenate(parts)[:tests] if parts else np.empty(empty_shape)  # the proposals used

    feats = np.concatenate(features)
    return ChainResult(labels=np.concatenate(labels), features=feats, accepted=accepted[:tests],
                       proposal_log_w=cat(prop_lw, (0,)), proposal_labels=cat(prop_labels, (0,)),
                       proposal_features=cat(prop_features, (0,) + feats.shape[1:]), invalid=invalid,
                       proposals_drawn=n_drawn, wall_s=wall, cpu_s=cpu, times_s=times, local_steps=int(local_steps),
                       mh_per_cycle=int(mh_per_cycle), stopped_early=done < n_cycles)
