"""The shipped models and the main job (`smoothflow demo`)."""
import json
import subprocess
import sys

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_smoothflow.io import packaged
from openmm_smoothflow.potential import FlowPotential


# training frames (MODEL_CARD.md): smooth on parts 1, 3, 4 of the reference MD, spline on parts 1, 2
@pytest.mark.parametrize("name, kind, frames", [("ala2-smooth.pt", "smooth", 325000), ("ala2-spline.pt", "spline", 90000)])
def test_shipped_models_match_the_packaged_molecule(ala2, name, kind, frames):
    path = packaged(name)
    assert path.stat().st_size < 10 * 2**20
    potential = FlowPotential(path)
    assert potential.metadata["kind"] == kind and potential.metadata["atom_count"] == 22
    assert potential.metadata["provenance"]["frames"] == frames
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
    from openmm_smoothflow.analysis.evaluate import evaluate

    metrics = evaluate(str(packaged("ala2-spline.pt")), [str(packaged("ala2-frames.npz"))], tmp_path,
                       n_frames=50, n_samples=50, progress=False)
    assert metrics["held_out_frames"] == 50 and metrics["samples"] == 50
    assert 0 < metrics["force_rmse"] < 300 and 0 <= metrics["ess"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text())["kind"] == "spline"
    for png in ("ramachandran.png", "forces.png", "energies.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert 1 / 50 <= metrics["largest_weight"] <= 1 and metrics["seed"] == 0
    # the seed fixes the samples: the same seed reproduces the sample metrics, another one does not
    again = evaluate(str(packaged("ala2-spline.pt")), [str(packaged("ala2-frames.npz"))], tmp_path / "again",
                     n_frames=5, n_samples=50, progress=False)
    other = evaluate(str(packaged("ala2-spline.pt")), [str(packaged("ala2-frames.npz"))], tmp_path / "other",
                     n_frames=5, n_samples=50, progress=False, seed=1)
    assert again["kl"] == metrics["kl"] and again["largest_weight"] == metrics["largest_weight"]
    assert other["kl"] != metrics["kl"]


def test_energy_histogram_range_ignores_clashing_samples(tmp_path):
    from openmm_smoothflow.analysis import plots

    rng = np.random.default_rng(0)
    data = rng.gamma(30.0, 1.0, 2000)                          # MD-like energies (kT), spread ~ 30 kT
    samples = np.concatenate([rng.gamma(30.0, 1.0, 1400), 10.0 ** rng.uniform(3, 7, 600)])  # 30% clashes
    xmax = plots.energy_histograms({"data": data, "samples": samples, "bad": [np.nan]}, tmp_path / "e.png")
    assert 40.0 < xmax < 150.0
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no finite energies"):
        plots.energy_histograms({"bad": [np.inf]}, tmp_path / "f.png")


def test_nve_summary_keeps_every_run_and_the_largest_jump():
    from openmm_smoothflow.analysis.nve import format_table, summarize

    runs = [dict(blown_up=False, error=None, std_per_dof=s, drift_per_dof=d, max_jump=j, seconds=1.0)
            for s, d, j in ((1e-3, 1e-4, 0.5), (2e-3, -1e-4, 3.0), (9e-3, 0.0, 40.0))]
    runs.append(dict(blown_up=True, error="total energy 1e4 kJ/mol at NVE step 30", max_jump=1e4, seconds=1.0))
    s = summarize(runs)
    assert (s["runs"], s["blown_up"]) == (4, 1)
    assert s["std_per_dof_median"] == pytest.approx(2e-3) and s["std_per_dof_mean"] == pytest.approx(4e-3)
    assert s["max_jump"] == 40.0 and len(s["per_run"]) == 4 and s["per_run"][3]["blown_up"]
    blown = summarize(runs[3:])
    assert "std_per_dof_mean" not in blown and blown["first_error"].startswith("total energy")
    table = format_table({"flow": s, "spline": blown}).splitlines()
    assert "2.00e-03" in table[1] and "40" in table[1] and table[2].split()[3:] == ["-"] * 4
