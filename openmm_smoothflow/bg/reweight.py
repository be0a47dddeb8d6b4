"""Importance reweighting of flow samples to the target Boltzmann distribution.

Flow samples x_i ~ q with flow log densities ``log_q`` and target reduced energies ``u`` = E(x)/kT
(both in kT units, (n,)) have log importance weights ``log w_i = -u(x_i) - log q(x_i)`` (up to a
constant, which self-normalisation cancels). A sample with a non-finite ``u`` (a failed OpenMM
evaluation) or a NaN gets ``log w = -inf``: weight 0; callers set it for samples outside the state
space too (``molecule``: inverted stereocentres, samples outside the flow's support).

Error bars of self-normalised estimates are the delta-method (asymptotic) standard errors

    mean = sum_i w_i f_i / sum_i w_i,    se^2 = sum_i w_i^2 (f_i - mean)^2 / (sum_i w_i)^2,

which for equal weights reduce to the usual sigma / sqrt(n) and which, like every importance
estimate, are themselves unreliable when the Kish ESS is small (a handful of dominant weights).
Free-energy differences of states use the same formula applied to the linearised log ratio
``h = 1_j / p_j - 1_i / p_i`` (its weighted mean is 0), so the covariance of the two populations is
included. Energies in kJ/mol at the public boundary (``kT`` in kJ/mol is passed in).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


def log_weights(u: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """log w = -u - log q (n,) from target energies ``u`` (kT) and flow log densities ``log_q``:
    ``-inf`` (weight 0) where ``u`` is non-finite or either is NaN; ``+inf`` where ``log_q = -inf``
    and ``u`` is finite (a state the flow cannot propose, e.g. outside its support)."""
    u = np.asarray(u, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    if u.shape != log_q.shape or u.ndim != 1:
        raise ValueError(f"u and log_q must be 1-D of the same length, got {u.shape} and {log_q.shape}")
    finite_u = np.isfinite(u)
    out = np.where(finite_u & np.isfinite(log_q), -u - np.where(np.isfinite(log_q), log_q, 0.0), -np.inf)
    return np.where(finite_u & (log_q == -np.inf), np.inf, out)


def normalised_weights(log_w: np.ndarray) -> np.ndarray:
    """Weights (n,) summing to 1 (zeros where ``log_w`` is -inf); all zero when no weight is finite."""
    log_w = np.asarray(log_w, dtype=np.float64)
    finite = np.isfinite(log_w)
    w = np.zeros_like(log_w)
    if finite.any():
        w[finite] = np.exp(log_w[finite] - log_w[finite].max())
        w /= w.sum()
    return w


def kish_ess(log_w: np.ndarray) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 (a number of samples, 0 when no weight is finite;
    ``training.metrics.kish_ess_fraction`` times n)."""
    import torch

    from ..training.metrics import kish_ess_fraction

    log_w = np.asarray(log_w, dtype=np.float64)
    return kish_ess_fraction(torch.from_numpy(log_w)) * len(log_w) if len(log_w) else 0.0


def weighted_mean(values: np.ndarray, log_w: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Self-normalised mean of ``values`` (n,) or (n, k) and its delta-method standard error (see the
    module docstring); ``log_w=None``: equal weights (mean and sigma / sqrt(n)). NaN when no weight is
    finite."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    w = np.full(n, 1.0 / n) if log_w is None else normalised_weights(log_w)
    if len(w) != n:
        raise ValueError(f"values ({n}) and log weights ({len(w)}) differ in length")
    shape = values.shape[1:]
    if n == 0 or w.sum() == 0:
        return np.full(shape, np.nan), np.full(shape, np.nan)
    wv = w.reshape((n,) + (1,) * len(shape))
    safe = np.where(wv > 0, values, 0.0)  # a zero-weight sample's value (maybe inf) must not enter
    mean = (wv * safe).sum(axis=0)
    se = np.sqrt((wv ** 2 * (safe - mean) ** 2).sum(axis=0))
    return mean, se


def state_indicators(labels: np.ndarray, n_states: int) -> np.ndarray:
    """One-hot (n, n_states) float of integer state labels (n,) in [0, n_states); a label of -1 (no
    state) is a row of zeros."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and (labels.min() < -1 or labels.max() >= n_states)):
        raise ValueError(f"labels must be 1-D integers in [-1, {n_states}), got range "
                         f"[{labels.min() if labels.size else ''}, {labels.max() if labels.size else ''}]")
    return (labels[:, None] == np.arange(n_states)[None, :]).astype(np.float64)


def log_ratio_influence(indicators: np.ndarray, p: np.ndarray, i: int, j: int) -> np.ndarray:
    """h = 1_j / p_j - 1_i / p_i (n,): the linearisation of log(p_j / p_i) about the populations ``p``."""
    return indicators[:, j] / p[j] - indicators[:, i] / p[i]


def free_energy(p: np.ndarray, i: int, j: int, kt: float) -> float:
    """F_j - F_i = -kT log(p_j / p_i) in kJ/mol (``kt`` kJ/mol); inf/-inf/NaN when a population is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-kt * (np.log(p[j]) - np.log(p[i])))


def state_estimates(labels: np.ndarray, names: Sequence[str], kt: float, log_w: Optional[np.ndarray] = None,
                    reference: int = 0, se_factor=None) -> Dict[str, object]:
    """Populations of the states ``names`` (labels (n,) index them) and free energies relative to state
    ``reference`` (kJ/mol), each with a standard error: importance-weighted with ``log_w``, equal
    weights without. ``se_factor(series) -> float`` (optional) multiplies each i.i.d. standard error
    (for a Markov chain: sqrt of the series' integrated autocorrelation time, see ``autocorr``).

    Returns ``{"populations": {name: {"p", "se"}}, "free_energies_kjmol": {"name - ref": {"dF", "se"}}}``;
    a free energy with an empty state is reported as ``None``.
    """
    n_states = len(names)
    ind = state_indicators(labels, n_states)
    p, se = weighted_mean(ind, log_w)
    factors = [se_factor(ind[:, k]) if se_factor else 1.0 for k in range(n_states)]
    # a state without a sample of nonzero weight has p = 0 and no error bar (None): nothing was seen
    pops = {name: {"p": float(p[k]), "se": float(se[k] * factors[k]) if p[k] > 0 else None,
                   "count": int(ind[:, k].sum())} for k, name in enumerate(names)}
    free: Dict[str, Optional[Dict[str, float]]] = {}
    for k, name in enumerate(names):
        if k == reference:
            continue
        key = f"{name} - {names[reference]}"
        if not (p[k] > 0 and p[reference] > 0):
            free[key] = None
            continue
        h = log_ratio_influence(ind, p, reference, k)
        _, se_h = weighted_mean(h, log_w)
        factor = se_factor(h) if se_factor else 1.0
        free[key] = {"dF": free_energy(p, reference, k, kt), "se": float(kt * se_h * factor)}
    return {"populations": pops, "free_energies_kjmol": free}


def reweighting_summary(lw: np.ndarray, labels: np.ndarray, names: List[str], kt: float) -> Dict[str, object]:
    """Everything reweighting says about flow samples with log weights ``lw`` (:func:`log_weights`)
    and state ``labels``: counts, Kish ESS (and / n), and the weighted state populations and free
    energies (:func:`state_estimates`, delta-method errors)."""
    ess = kish_ess(lw)
    out: Dict[str, object] = {"samples": int(len(lw)), "zero_weight_samples": int((~np.isfinite(lw)).sum()),
                              "kish_ess": ess, "kish_ess_fraction": ess / max(len(lw), 1),
                              "error_bars": "delta method (self-normalised importance sampling)"}
    out.update(state_estimates(labels, names, kt, lw))
    return out
