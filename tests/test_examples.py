"""The examples, run as a user runs them (subprocesses, marked slow), and ``smoothflow bench losses``."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL
from openmm_smoothflow import cli
from openmm_smoothflow.demo import packaged

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def model_args(tmp_path_factory, ala2):
    """No argument when the shipped model exists (the examples' default), else a tiny random export."""
    if packaged("ala2-smooth.pt").is_file():
        return []
    from openmm_smoothflow.flows.generator import BoltzmannGenerator
    from openmm_smoothflow.potential import export

    torch.manual_seed(0)
    generator = BoltzmannGenerator.from_topology(ala2.topology, **TINY_MODEL)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    export(generator, path)
    return [str(path)]


def run_example(args, timeout):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_add_flow_to_system(model_args):
    out = run_example([EXAMPLES / "add_flow_to_system.py", *model_args], timeout=300)
    energies = [float(v) for v in re.findall(r"potential\s+(\S+) kJ/mol", out)]
    assert len(energies) == 5 and all(math.isfinite(e) for e in energies), out


@pytest.mark.slow
def test_openmm_ml(model_args):
    out = run_example([EXAMPLES / "openmm_ml.py", *model_args], timeout=300)
    assert "TorchForce" in out and "CMMotionRemover" in out
    assert len(re.findall(r"difference 0\.0e\+00", out)) == 5, out
    assert re.search(r"^500,", out, re.M), out  # the StateDataReporter's last line


@pytest.mark.slow
def test_end_to_end_quick(tmp_path):
    out = run_example([EXAMPLES / "end_to_end.py", "--quick", "--threads", "1", "--out-dir", tmp_path], timeout=600)
    for stage in ("1. simulate", "2. train", "3. export", "4. MD"):
        assert f"=== {stage}" in out
    for name in ("md.npz", "run-nll/best.pt", "run-fm/best.pt", "model.pt", "summary.json"):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["quick"] and summary["md"]["nve_finite"]
    assert set(summary["seconds"]) >= {"simulate", "train", "export", "md", "total"}


@pytest.mark.slow
def test_toy_problems_quick(tmp_path):
    run_example([EXAMPLES / "toy_problems.py", "--quick", "--threads", "1", "--no-progress", "--out-dir", tmp_path],
                timeout=600)
    assert (tmp_path / "toy.png").is_file()
    assert json.loads((tmp_path / "toy.json").read_text())["settings"]["quick"] is True


# --- smoothflow bench losses ------------------------------------------------------------------------

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
    from openmm_smoothflow.benchmarks.losses import parse_setting

    assert parse_setting("0.1,0.001") == (0.1, 0.001)
    for bad in ("0.1", "a,b", "0.9,0.2", "-1,0"):
        with pytest.raises(ValueError):
            parse_setting(bad)
