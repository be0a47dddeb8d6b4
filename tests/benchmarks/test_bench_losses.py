"""``smoothflow bench losses`` (``benchmarks/losses.py``, ``commands/bench_losses.py``): the table, its JSON,
failed runs, and the validation of ``--settings``."""
import json
import math

import pytest

from helpers import TINY_MODEL
from openmm_smoothflow import cli


def test_bench_losses_table_json_and_failed_runs(md_data, tmp_path, monkeypatch, capsys):
    """Two settings x two kinds, one replica each; every force-matching run is made to fail (NaN loss),
    and must be counted as failed, not crash the command."""
    from openmm_smoothflow.training import trainer as trainer_module

    real = trainer_module.combined_loss

    def nan_with_force_matching(generator, x, forces, weights, *args, **kwargs):
        terms = real(generator, x, forces, weights, *args, **kwargs)
        if weights.fm > 0:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(trainer_module, "combined_loss", nan_with_force_matching)
    out = tmp_path / "losses.json"
    rc = cli.main(["bench", "losses", "--data", str(md_data), "--stride", "1", "--epochs", "1", "--replicas", "1",
                   "--max-steps", "2", "--batch-size", "32", "--model", json.dumps(TINY_MODEL),
                   "--settings", "0,0", "0,0.001", "--val-samples", "16", "--threads", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for column in ("NLL (kT)", "FME ((kT/nm)^2)", "KLD (kT)", "failed"):
        assert column in text
    result = json.loads(out.read_text())
    rows = {(r["kind"], r["kl"], r["fm"]): r for r in result["rows"]}
    assert set(rows) == {("smooth", 0.0, 0.0), ("smooth", 0.0, 0.001), ("spline", 0.0, 0.0), ("spline", 0.0, 0.001)}
    for (kind, kl, fm), row in rows.items():
        summary, (run,) = row["summary"], row["runs"]
        assert summary["replicas"] == 1
        if fm > 0:
            assert summary["failed"] == 1 and run["failed"] and "non-finite" in run["error"]
            assert summary["nll"]["n"] == 0 and summary["nll"]["mean"] is None  # NaN -> null in strict JSON
        else:
            assert summary["failed"] == 0 and not run["failed"]
            for key in ("nll", "fme", "kld"):
                assert math.isfinite(run[key]) and summary[key]["mean"] == run[key] and summary[key]["n"] == 1
    assert result["table"] in text and "1/1" in result["table"] and "0/1" in result["table"]


def test_bench_losses_settings_are_validated():
    from openmm_smoothflow.commands.bench_losses import parse_setting

    assert parse_setting("0.1,0.001") == (0.1, 0.001)
    for bad in ("0.1", "a,b", "0.9,0.2", "-1,0"):
        with pytest.raises(ValueError):
            parse_setting(bad)
