"""Autocorrelation of Markov-chain (or MD) time series: integrated autocorrelation time and the
standard errors and effective sample sizes that follow from it.

``tau = 1 + 2 sum_{t>=1} rho(t)`` with the autocorrelation ``rho`` from an FFT and Sokal's automatic
window (the smallest ``M`` with ``M >= c tau(M)``, ``c = 5``); the standard error of a chain mean is
``sigma sqrt(tau / n)`` and the chain holds ``n / tau`` effective samples. ``tau`` is in units of the
series' spacing (MH moves, MD frames). A constant series has no defined ``tau`` (NaN): a chain that
never left one state says nothing about how often it would.
"""
from __future__ import annotations

import math

import numpy as np

SOKAL_C = 5.0


def autocorrelation(series: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation rho(t), t = 0 .. n-1, of a 1-D series (NaN for a constant series)."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need a 1-D series of at least 2 values, got shape {x.shape}")
    x = x - x.mean()
    n = len(x)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, size)
    acf = np.fft.irfft(f * np.conj(f), size)[:n]
    if not acf[0] > 0:
        return np.full(n, np.nan)
    return acf / acf[0]


def integrated_autocorr_time(series: np.ndarray, c: float = SOKAL_C) -> float:
    """Integrated autocorrelation time (>= ~0.5, in steps of the series) with Sokal's window; NaN for
    a constant series."""
    rho = autocorrelation(series)
    if not np.isfinite(rho[0]):
        return float("nan")
    taus = 2.0 * np.cumsum(rho) - 1.0  # tau(M) = 1 + 2 sum_{t=1}^{M} rho(t)
    window = np.arange(len(taus)) >= c * taus
    m = int(np.argmax(window)) if window.any() else len(taus) - 1
    return float(max(taus[m], 1e-12))


def se_factor(series: np.ndarray) -> float:
    """sqrt(tau) of ``series``: the factor by which a chain's i.i.d. standard error grows (NaN when
    undefined)."""
    return math.sqrt(integrated_autocorr_time(series))


def effective_samples(series: np.ndarray) -> float:
    """n / tau (0 for a constant series: no information about fluctuations)."""
    tau = integrated_autocorr_time(series)
    return 0.0 if not math.isfinite(tau) else float(len(series) / tau)
