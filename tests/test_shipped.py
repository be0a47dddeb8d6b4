"""The shipped models and the main job (`smoothflow demo`)."""
import json
import subprocess
import sys

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_smoothflow.demo import packaged
from openmm_smoothflow.potential import FlowPotential


@pytest.mark.parametrize("name, kind", [("ala2-smooth.pt", "smooth"), ("ala2-spline.pt", "spline")])
def test_shipped_models_match_the_packaged_molecule(ala2, name, kind):
    path = packaged(name)
    assert path.stat().st_size < 10 * 2**20
    potential = FlowPotential(path)
    assert potential.metadata["kind"] == kind and potential.metadata["atom_count"] == 22
    assert potential.metadata["provenance"]["frames"] == 90000
    system = potential.createSystem(ala2.topology)
    with np.load(packaged("ala2-frames.npz")) as npz:
        frame = npz["positions"][0].astype(float)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(frame)
    state = context.getState(getEnergy=True, getForces=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.isfinite(state.getForces(asNumpy=True)._value).all()


def test_shipped_smooth_flow_forces_track_the_force_field():
    """On packaged MD frames (not all held out, so a loose bound) the flow forces follow amber's."""
    potential = FlowPotential(packaged("ala2-smooth.pt"))
    generator = potential.generator()
    import torch

    with np.load(packaged("ala2-frames.npz")) as npz:
        x = torch.tensor(npz["positions"][:100], dtype=torch.float64)
        reference = torch.tensor(npz["forces"][:100], dtype=torch.float64) / (0.0083144626 * 300.0)
    rmse = float(((generator.force(x) - reference) ** 2).mean().sqrt())
    zero = float((reference**2).mean().sqrt())
    assert rmse < 0.3 * zero, (rmse, zero)


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "openmm_smoothflow.cli", "demo", "--frames", "1", "--equil-steps",
                           "50", "--nve-steps", "200", "--langevin-steps", "100", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "smooth flow" in proc.stdout and "classical" in proc.stdout
    result = json.loads((out / "demo.json").read_text())
    assert result["nve"]["smooth flow"]["blown_up"] == 0
    for png in ("nve.png", "ramachandran.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_langevin_with_the_shipped_flow_stays_finite(ala2):
    system = FlowPotential(packaged("ala2-smooth.pt")).createSystem(ala2.topology)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    with np.load(packaged("ala2-frames.npz")) as npz:
        context.setPositions(npz["positions"][10].astype(float))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    integrator.step(2000)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.isfinite(state.getPositions(asNumpy=True)._value).all()


def test_evaluate_writes_metrics_and_figures(tmp_path):
    from openmm_smoothflow.benchmarks.evaluate import evaluate

    metrics = evaluate(str(packaged("ala2-spline.pt")), [str(packaged("ala2-frames.npz"))], tmp_path,
                       n_frames=50, n_samples=50, progress=False)
    assert metrics["held_out_frames"] == 50 and metrics["samples"] == 50
    assert 0 < metrics["force_rmse"] < 300 and 0 <= metrics["ess"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text())["kind"] == "spline"
    for png in ("ramachandran.png", "forces.png", "energies.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
