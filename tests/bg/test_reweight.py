"""Importance reweighting: exact means and populations recovered within their error bars, calibrated
error bars, Kish ESS, weight-0 samples."""
import math

import numpy as np
import pytest
from bg_toys import DoubleWell

from openmm_smoothflow.bg.reweight import (free_energy, kish_ess, log_weights, reweighting_summary, state_estimates,
                                           weighted_mean)


def _gaussian_toy(n, rng):
    """Target N(1, 0.5^2) known only up to a constant; proposal N(0, 1) with exact log q."""
    x = rng.standard_normal(n)
    u = 0.5 * ((x - 1.0) / 0.5) ** 2 + 3.7   # unnormalised target energy (kT), arbitrary offset
    log_q = -0.5 * x ** 2 - 0.5 * math.log(2 * math.pi)
    return x, log_weights(u, log_q)


def test_reweighting_recovers_exact_means():
    rng = np.random.default_rng(0)
    x, lw = _gaussian_toy(20000, rng)
    mean, se = weighted_mean(np.stack([x, x ** 2], axis=1), lw)
    exact = np.array([1.0, 1.25])
    assert (se > 0).all() and (se < 0.02).all()
    assert (np.abs(mean - exact) < 4 * se).all(), (mean, se)
    # the unweighted mean is the proposal's (0), far outside: the weights matter
    assert abs(x.mean() - 1.0) > 50 * se[0]


def test_error_bars_are_calibrated():
    """Over repeats, |estimate - exact| < 2 se about 95% of the time (delta-method error bars)."""
    rng = np.random.default_rng(1)
    inside = []
    for _ in range(300):
        x, lw = _gaussian_toy(400, rng)
        mean, se = weighted_mean(x, lw)
        inside.append(abs(mean - 1.0) < 2 * se)
    assert 0.88 < np.mean(inside) < 0.99, np.mean(inside)


def test_double_well_populations_and_free_energy():
    well = DoubleWell(mu=0.0, sigma=1.2)
    x = well.sample_proposals(40000)
    lw = log_weights(well.u(x), well.log_q(x))
    est = state_estimates((x > 0).astype(int), ["x<0", "x>0"], kt=2.5, log_w=lw)
    exact = well.exact_population()
    p = est["populations"]["x>0"]
    assert abs(p["p"] - exact) < 4 * p["se"] and p["se"] < 0.01
    df = est["free_energies_kjmol"]["x>0 - x<0"]
    exact_df = -2.5 * math.log(exact / (1 - exact))
    assert abs(df["dF"] - exact_df) < 4 * df["se"] and df["se"] < 0.1


def test_free_energy_error_matches_a_bootstrap():
    well = DoubleWell(mu=0.0, sigma=1.2, seed=3)
    x = well.sample_proposals(5000)
    lw = log_weights(well.u(x), well.log_q(x))
    labels = (x > 0).astype(int)
    se = state_estimates(labels, ["a", "b"], 1.0, lw)["free_energies_kjmol"]["b - a"]["se"]
    rng = np.random.default_rng(4)
    boot = []
    for _ in range(300):
        i = rng.integers(0, len(x), len(x))
        p, _ = weighted_mean(np.stack([labels[i] == 0, labels[i] == 1], axis=1).astype(float), lw[i])
        boot.append(free_energy(p, 0, 1, 1.0))
    assert 0.8 < se / np.std(boot) < 1.25


def test_weight_zero_samples_and_kish_ess():
    u = np.array([1.0, np.inf, np.nan, 2.0, 1.0, np.inf])
    log_q = np.array([0.0, 0.0, 0.0, np.nan, -np.inf, -np.inf])
    lw = log_weights(u, log_q)
    assert lw[0] == -1.0 and (lw[1:4] == -np.inf).all() and lw[4] == np.inf and lw[5] == -np.inf
    lw = lw[:4]
    mean, _ = weighted_mean(np.array([3.0, np.inf, np.nan, 7.0]), lw)  # zero-weight values never enter
    assert mean == 3.0
    assert kish_ess(np.zeros(50)) == pytest.approx(50)
    assert kish_ess(np.array([0.0, -1000.0, -1000.0])) == pytest.approx(1.0)
    assert kish_ess(np.full(3, -np.inf)) == 0.0
    with pytest.raises(ValueError):
        log_weights(np.zeros(3), np.zeros(2))


def test_summary_of_an_unvisited_state():
    lw = np.zeros(10)
    out = reweighting_summary(lw, np.zeros(10, dtype=int), ["a", "b"], kt=2.5)
    assert out["populations"]["b"] == {"p": 0.0, "se": None, "count": 0}
    assert out["free_energies_kjmol"]["b - a"] is None
    assert out["kish_ess"] == pytest.approx(10) and out["zero_weight_samples"] == 0
    with pytest.raises(ValueError):
        state_estimates(np.array([0, 2]), ["a", "b"], 1.0)
