"""Metropolis data for the particle systems: autocorrelation, equilibrium summary, the papers' splits."""
import numpy as np
import pytest
import torch

from openmm_smoothflow.particles.data import (N_TEST, N_VAL, autocorrelation_time, generate, load_dataset, split,
                                              training_subset)


def test_autocorrelation_time_of_an_ar1_process():
    phi, T, C = 0.8, 4000, 100
    rng = np.random.default_rng(0)
    x = np.zeros((T, C))
    for t in range(1, T):
        x[t] = phi * x[t - 1] + rng.standard_normal(C)
    assert autocorrelation_time(x) == pytest.approx((1 + phi) / (1 - phi), rel=0.15)
    assert autocorrelation_time(rng.standard_normal((T, C))) == pytest.approx(1.0, abs=0.2)


def test_generate_dw4_equilibrium_summary(small_dw4):
    path, x, s = small_dw4
    assert x.shape == (2100, 4, 2)
    np.testing.assert_allclose(x.mean(1), 0.0, atol=1e-12)
    assert 0.25 < s["acceptance"] < 0.55
    assert s["thin_steps"] >= 2 * s["tau_energy_steps"]
    assert s["n_decorrelated"] >= 2100
    assert s["halves_difference_in_stderr"] < 5  # first and second half of production agree
    # the DW4 equilibrium mean energy at kT = 1 (a 2,000-chain run with 102,000 samples gives -22.53)
    assert -24.0 < s["energy_mean"] < -21.0
    assert len(s["histogram_first_half"]) == len(s["histogram_bins"]) - 1


def test_splits_and_roundtrip(small_dw4):
    path, x, _ = small_dw4
    data = load_dataset(path)
    assert data["system"] == "dw4"
    assert len(data["test"]) == N_TEST and len(data["val"]) == N_VAL and len(data["train"]) == 100
    np.testing.assert_array_equal(data["test"], x[:N_TEST])
    assert len(training_subset(data, 10)) == 10
    with pytest.raises(ValueError, match="asked for 1000"):
        training_subset(data, 1000)
    with pytest.raises(ValueError, match="need more than 2000"):
        split(x[:1500])
    with pytest.raises(FileNotFoundError):
        load_dataset(path.parent / "missing.npz")


def test_lj13_chains_start_without_overlaps():
    x, s = generate("lj13", 20, n_chains=20, burn_in=200, pilot=100, seed=0, progress=False)
    assert x.shape == (20, 13, 3) and np.isfinite(x).all()
    d = torch.cdist(torch.tensor(x), torch.tensor(x))
    assert float(d[:, ~torch.eye(13, dtype=bool)].min()) > 0.7
