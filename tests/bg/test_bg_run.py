"""The summary of a correlated series of states, and strict JSON."""
import json
import math

import numpy as np
import pytest

from openmm_smoothflow.bg.run import json_clean, series_summary


def test_series_summary_counts_entries_and_effective_samples():
    labels = np.array([0] * 50 + [1] * 10 + [0] * 30 + [1] * 10)
    out = series_summary(labels, ["a", "b"], kt=2.5, wall_s=2.0, spacing="frames", cpu_s=1.0)
    a, b = out["autocorrelation"]["a"], out["autocorrelation"]["b"]
    assert out["n"] == 100 and a["entries"] == 2 and b["entries"] == 2
    assert out["populations"]["b"]["p"] == pytest.approx(0.2) and out["populations"]["b"]["count"] == 20
    assert a["tau"] > 2 and a["effective_samples"] == pytest.approx(100 / a["tau"])
    assert b["effective_samples_per_cpu_s"] == pytest.approx(2 * b["effective_samples_per_s"])
    assert out["free_energies_kjmol"]["b - a"]["dF"] == pytest.approx(-2.5 * math.log(0.2 / 0.8))
    never = series_summary(np.zeros(20, dtype=int), ["a", "b"], kt=2.5)
    assert never["autocorrelation"]["b"] == {"tau": None, "entries": 0, "effective_samples": 0.0,
                                             "effective_samples_per_s": None, "effective_samples_per_cpu_s": None}
    assert never["free_energies_kjmol"]["b - a"] is None


def test_json_clean_is_strict_json():
    text = json.dumps(json_clean({"a": float("nan"), "b": [np.float64(1.5), np.int64(2)], "c": float("inf")}),
                      allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.5, 2], "c": None}
