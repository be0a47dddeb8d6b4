"""md/health.py and md/run.py: MD that blows up, breaks bonds or inverts a stereocentre stops, with
its last good state kept; runs outside the model's support or temperature warn."""
import warnings

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_smoothflow.errors import SmoothflowWarning
from openmm_smoothflow.io import packaged
from openmm_smoothflow.md.health import HealthLimits, HealthMonitor, MDHealthError, stereocentres
from openmm_smoothflow.md.run import run_md

MODEL = packaged("ala2-smooth.pt")


@pytest.fixture()
def monitor(ala2):
    x = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return HealthMonitor(ala2.topology, x, 300.0, n_dof=63), np.array(x)


def atom(ala2, residue, name):
    return next(a.index for a in ala2.topology.atoms() if a.residue.name == residue and a.name == name)


def test_a_healthy_state_passes_and_the_bounds_are_documented(monitor):
    m, x = monitor
    assert m.check(0, x, -500.0, 0.5 * 63 * 2.494) is None
    assert m.max_jump == 1000.0 and m.max_temperature == 900.0
    assert m.checks == 1 and m.temperatures[0] == pytest.approx(300.0, rel=1e-3)


def test_blow_up_energy_jump_and_temperature_runaway(monitor):
    """Reproduction 1: Epot -302 -> 3e8 kJ/mol, T 1e9 K, H atoms 19 nm away."""
    m, x = monitor
    assert m.check(0, x, -302.0, 80.0) is None
    assert "jumped from -302 to 3e+08" in m.check(100, x, 3e8, 80.0)
    assert "temperature ran away" in m.check(100, x, -300.0, 1e9)
    far = x.copy()
    far[0] += 19.0
    assert m.check(100, far, -300.0, 80.0).startswith("bond ACE1:CH3-ACE1:H1 is 301")
    nan = x.copy()
    nan[3, 1] = np.nan
    assert "non-finite" in m.check(100, nan, -300.0, 80.0)


def test_broken_bond_and_inverted_chirality(ala2, monitor):
    """Reproduction 1 at 600 K: a C-H bond broken, the C-alpha inverted, energies finite."""
    m, x = monitor
    ca, ha = atom(ala2, "ALA", "CA"), atom(ala2, "ALA", "HA")
    assert ca in stereocentres(ala2.topology)[:, 0]
    stretched = x.copy()
    stretched[ha] = x[ca] + 1.6 * (x[ha] - x[ca])
    message = m.check(1, stretched, -500.0, 80.0)
    assert message.startswith("bond ") and "ALA2:HA" in message and "is 1.60x its start length" in message
    inverted = x.copy()
    inverted[ha] = x[ca] - (x[ha] - x[ca])  # HA through CA: same bond length, the other hand
    assert m.check(1, inverted, -500.0, 80.0).startswith("chirality of ALA2:CA inverted")
    mirror = x * np.array([-1.0, 1.0, 1.0])  # every stereocentre inverted, every bond intact
    assert "centre(s) inverted" in m.check(1, mirror, -500.0, 80.0)
    off = HealthMonitor(ala2.topology, x, 300.0, 63, HealthLimits(chirality=False))
    assert off.check(1, mirror, -500.0, 80.0) is None


def test_support_and_temperature_warnings(ala2, monitor):
    _, x = monitor
    said = []
    m = HealthMonitor(ala2.topology, x, 600.0, 63, outside=lambda pos: True, model_temperature=300.0,
                      warn=said.append)
    assert "MD at 600 K, but the model was trained at 300 K" in said[0]
    for step in range(10):
        assert m.check(step, x, -500.0, 0.5 * 63 * 2.494 * 2) is None
    assert len(said) == 2 and "left the model's support" in said[1]  # once, not per frame
    summary = m.summary_warnings()
    assert summary[0] == "10 of 10 checked frames were outside the model's support"
    assert "mean temperature 599.9 K is far from the model's 300 K" in summary[1]


@pytest.fixture(scope="module")
def random_flow(ala2, tmp_path_factory):
    """An untrained (random) tiny flow: MD with it breaks bonds within 50 steps, energies finite."""
    import torch

    from helpers import TINY_MODEL, randomize
    from openmm_smoothflow.flows.generator import BoltzmannGenerator
    from openmm_smoothflow.potential import export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("random-flow") / "random.pt"
    export(randomize(BoltzmannGenerator.from_topology(ala2.topology, **TINY_MODEL).double(), 0.05), path)
    return path


def test_run_md_healthy_run_reports_its_checks_and_warns_off_temperature():
    with pytest.warns(SmoothflowWarning, match="MD at 345 K, but the model was trained at 300 K"):
        result = run_md(MODEL, steps=100, check_every=50, temperature=345.0, progress=False)
    assert result["steps_done"] == 100 and result["checks"] == 3 and result["finite"]
    assert result["outside_frames"] == 0 and np.isfinite(result["epot"])
    assert "MD at 345 K" in result["warnings"][0]


def test_run_md_takes_the_force_backend_and_precision():
    double = run_md(MODEL, steps=20, check_every=10, progress=False, seed=3)
    single = run_md(MODEL, steps=20, check_every=10, progress=False, seed=3, precision="single")
    assert single["steps_done"] == 20 and 0 < abs(single["epot"] - double["epot"]) < 1e-3  # same seed, 20 fs
    with pytest.raises(ValueError, match="backend must be"):
        run_md(MODEL, steps=10, progress=False, backend="cuda-graphs")
    with pytest.raises(ValueError, match="precision must be one of"):
        run_md(MODEL, steps=10, progress=False, precision="half")


def test_run_md_stops_and_keeps_the_last_good_state(random_flow, tmp_path):
    """A broken bond at finite energy stops the run; the state of the last passed check is kept."""
    from openmm import app

    prefix = tmp_path / "last-good"
    with pytest.raises(MDHealthError, match=r"MD unhealthy at step 50: bond .* start length") as info:
        run_md(random_flow, steps=100, check_every=50, progress=False, last_good=prefix)
    err = info.value
    assert err.step == 50 and err.last_good_step == 0 and err.reason.startswith("bond ")
    assert [p.rsplit("/", 1)[1] for p in err.files] == ["last-good.pdb", "last-good.xml"]
    state = openmm.XmlSerializer.deserialize((tmp_path / "last-good.xml").read_text())
    assert state.getStepCount() == 0 and len(state.getVelocities()) == 22
    pdb = app.PDBFile(str(tmp_path / "last-good.pdb"))
    np.testing.assert_allclose(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                               state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), atol=2e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-good.pdb", "last-good.xml"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps must be a positive integer"), (dict(report_every=0), "report_every"),
    (dict(temperature=0.0), "temperature must be > 0"), (dict(step_fs=-1.0), "time step"),
    (dict(integrator="nose"), "integrator must be one of"), (dict(check_every=0), "check_every")])
def test_run_md_arguments_are_validated(kwargs, match):
    """Reproduction 3: --report-every 0 looped forever, --steps 0 raised UnboundLocalError,
    --temperature 0 ran at 300 K."""
    with pytest.raises(ValueError, match=match):
        run_md(MODEL, **kwargs)


@pytest.mark.slow
def test_shipped_flow_long_langevin_stays_healthy():
    """Langevin MD with the shipped flow at the issue's 2 fs step: finite, bonds within 0.5x-1.5x of the
    start structure, no stereocentre inverted, never outside the model's support (every check of
    md/health.py, every 100 steps). 1 ns (500,000 steps at ~5 ms/step, 40 min) does not fit the slow
    suite; 150,000 steps (300 ps, ~12 min on an idle core) do."""
    from openmm_smoothflow.md.systems import alanine_dipeptide_pdb

    with warnings.catch_warnings():
        warnings.simplefilter("error", SmoothflowWarning)
        result = run_md(MODEL, alanine_dipeptide_pdb(), steps=SLOW_STEPS, step_fs=2.0, check_every=100,
                        progress=False, seed=11)
    assert result["steps_done"] == SLOW_STEPS and result["checks"] == SLOW_STEPS // 100 + 1
    assert 270.0 < result["mean_temperature"] < 330.0


SLOW_STEPS = 150_000
