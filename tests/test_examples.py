"""The examples, run as a user runs them (subprocesses, marked slow)."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL
from openmm_smoothflow.io import packaged

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


@pytest.mark.slow
def test_mixed_system(tmp_path):
    out = run_example([EXAMPLES / "mixed_system.py", "--steps", "200", "--out-dir", tmp_path], timeout=600)
    diff = float(re.search(r"relative difference (\S+)\)", out).group(1))
    assert diff < 1e-3, out
    for lam in re.findall(r"lambda_interpolate=\d: (\S+) kJ/mol \(\w+ System: (\S+)\)", out):
        assert float(lam[0]) == pytest.approx(float(lam[1]), rel=1e-6), out
    assert "positions finite: True" in out and (tmp_path / "traj.dcd").stat().st_size > 0
