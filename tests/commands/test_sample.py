"""``smoothflow sample`` on alanine dipeptide with the shipped model and tiny settings: the JSON, the
chain file and the figures, against a short reference MD run made here; bad input fails cleanly."""
import json

import numpy as np
import openmm
import pytest
from helpers import chain_topology
from openmm import app, unit

from openmm_smoothflow import cli
from openmm_smoothflow.io import packaged

MODEL = str(packaged("ala2-smooth.pt"))


def test_sample_writes_json_chain_and_figures(tmp_path, md_data, capsys):
    out = tmp_path / "run"
    rc = cli.main(["sample", MODEL, "--cycles", "12", "--md-steps", "10", "--mh-per-cycle", "4", "--batch", "16",
                   "--equilibration-steps", "50", "--reference", str(md_data), "--threads", "1", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    assert "acceptance" in capsys.readouterr().out
    summary = json.loads((out / "sample.json").read_text())
    assert summary["cycles"] == 12 and summary["mh_tests"] == 48 and summary["proposals_drawn"] == 48
    assert 0 <= summary["accepted"] <= 48 and summary["acceptance_rate"] == pytest.approx(summary["accepted"] / 48)
    assert summary["state_names"] == ["beta", "alpha_R", "phi>0"]
    for block in ("chain", "reweighting", "reference"):
        pops = summary[block]["populations"]
        assert sum(p["p"] for p in pops.values()) == pytest.approx(1.0)
    assert sum(p["count"] for p in summary["chain"]["populations"].values()) == 12
    assert sum(p["count"] for p in summary["reference"]["populations"].values()) == 400
    assert 0 < summary["reweighting"]["kish_ess"] <= 48
    chain = np.load(out / "chain.npz")
    assert chain["phi_psi"].shape == (12, 2) and chain["accepted"].shape == (48,)
    assert chain["accepted"].sum() == summary["accepted"]
    assert ((chain["phi_psi"] > -np.pi - 1e-6) & (chain["phi_psi"] <= np.pi + 1e-6)).all()
    for name in ("ramachandran.png", "populations.png"):
        assert (out / name).stat().st_size > 1000


def test_plain_md_mode(tmp_path, capsys):
    out = tmp_path / "md"
    assert cli.main(["sample", MODEL, "--cycles", "5", "--md-steps", "20", "--mh-per-cycle", "0",
                     "--equilibration-steps", "0", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "sample.json").read_text())
    assert not summary["flow_proposals"] and "reweighting" not in summary and summary["simulated_md_ps"] == 0.1


def test_bad_input(tmp_path, capsys):
    assert cli.main(["sample", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    pdb = tmp_path / "chain.pdb"   # a molecule that is not the model's
    with open(pdb, "w") as f:
        app.PDBFile.writeFile(chain_topology(5), [openmm.Vec3(0.15 * i, 0, 0) for i in range(5)] * unit.nanometer, f)
    assert cli.main(["sample", MODEL, "--pdb", str(pdb), "--cycles", "2", "--out", str(tmp_path)]) == 2
    assert "has 5 atoms" in capsys.readouterr().err
    bad = tmp_path / "other.npz"
    np.savez(bad, positions=np.zeros((3, 5, 3), dtype=np.float32))
    assert cli.main(["sample", MODEL, "--reference", str(bad), "--cycles", "2", "--out", str(tmp_path)]) == 2
    assert "not frames of this molecule" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sample", MODEL, "--cycles", "0"])
    assert cli.main(["sample", MODEL, "--cycles", "2", "--md-steps", "0", "--mh-per-cycle", "0",
                     "--out", str(tmp_path)]) == 2
