"""Integrated autocorrelation times against the exact value of an AR(1) process."""
import math

import numpy as np
import pytest

from openmm_smoothflow.bg.autocorr import autocorrelation, effective_samples, integrated_autocorr_time, se_factor


def _ar1(a, n, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = noise[0] / math.sqrt(1 - a * a)
    for i in range(1, n):
        x[i] = a * x[i - 1] + noise[i]
    return x


@pytest.mark.parametrize("a", [0.0, 0.5, 0.9])
def test_tau_of_ar1(a):
    exact = (1 + a) / (1 - a)
    tau = integrated_autocorr_time(_ar1(a, 100_000))
    assert abs(tau - exact) < 0.1 * exact, (tau, exact)


def test_chain_error_bar_is_calibrated():
    """The sigma sqrt(tau / n) error of an AR(1) mean covers the true mean 0 about 95% of the time."""
    inside = [abs(x.mean()) < 2 * x.std() * se_factor(x) / math.sqrt(len(x))
              for x in (_ar1(0.8, 4000, seed) for seed in range(200))]
    assert 0.88 < np.mean(inside) < 0.99


def test_constant_series_has_no_tau():
    assert math.isnan(integrated_autocorr_time(np.ones(100)))
    assert effective_samples(np.ones(100)) == 0.0
    assert autocorrelation(np.arange(5.0))[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        autocorrelation(np.ones(1))
