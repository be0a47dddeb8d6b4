"""Training runs of the particle flow: checkpoints (weights_only), resume, export of the best weights."""
import json

import pytest
import torch

from openmm_smoothflow.particles.data import load_dataset
from openmm_smoothflow.particles.export import export_checkpoint, load_particle_model
from openmm_smoothflow.particles.md import no_fusion
from openmm_smoothflow.particles.systems import DW4, UNITS
from openmm_smoothflow.cli import main
from openmm_smoothflow.particles.train import load_flow, train


def test_train_resume_and_export(small_dw4, tmp_path):
    dw4_data = small_dw4[0]
    out = tmp_path / "run"
    kw = dict(n_train=50, minutes=0, batch_size=8, n_steps=1, val_every=2, n_val=20, n_test=50, progress=False)
    r1 = train(dw4_data, out, max_iterations=2, **kw)
    assert r1["iterations"] == 2 and r1["test"]["n"] == 50 and r1["test"]["nll"] > 0
    assert r1["test"]["folded"] == 0.0 and all(h["val_folded"] == 0.0 for h in r1["history"])
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["iteration"] == 2
    r2 = train(dw4_data, out, max_iterations=4, **kw)  # resumes from last.pt
    assert r2["iterations"] == 4 and len(r2["history"]) == 2
    assert json.loads((out / "result.json").read_text())["iterations"] == 4
    flow, _ = load_flow(out / "best.pt")
    model = tmp_path / "dw4.pt"
    meta = export_checkpoint(out / "best.pt", model)
    assert meta["provenance"]["iterations"] == 4 and meta["provenance"]["n_train"] == 50
    x = load_dataset(dw4_data)["test"][:3]
    nll = flow.nll(torch.tensor(x))
    module = load_particle_model(model)
    with no_fusion():
        e = torch.stack([module(torch.tensor(DW4.to_nm(xi))) for xi in x])
    torch.testing.assert_close(e / UNITS.energy_kjmol, nll, rtol=1e-10, atol=1e-10)


def test_cli_train_takes_the_test_set_size_and_coords_range(small_dw4, tmp_path, capsys):
    base = ["particles", "train", "--data", str(small_dw4[0]), "--n-train", "30", "--minutes", "0",
            "--iterations", "1", "--batch-size", "4", "--rk4-steps", "1", "--n-val", "10", "--val-every", "1"]
    assert main(base + ["--n-test", "7", "--coords-range", "3", "--eval-rk4-steps", "2",
                        "--out", str(tmp_path / "run")]) == 0
    assert "on 7 configurations after 1 iterations" in capsys.readouterr().out
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["test"]["n"] == 7 and result["config"]["coords_range"] == 3.0 and result["eval_rk4_steps"] == 2
    best = load_flow(tmp_path / "run" / "best.pt")[0]
    best.n_steps = 2  # the test NLL is that of the 2-step map, not of the 1-step training map
    x = torch.as_tensor(load_dataset(small_dw4[0])["test"][:7], dtype=torch.float64)
    assert result["test"]["nll"] == pytest.approx(float(best.nll(x).mean()), abs=1e-9)
    assert load_flow(tmp_path / "run" / "best.pt")[0].dynamics.layers[0].coords_range == 1.0  # 3 / 3 layers
    assert main(base + ["--n-test", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "n_test must be at least 1" in capsys.readouterr().err


def test_cli_evaluate_checkpoint_and_export_alike(small_dw4, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_dw4[0], run, n_train=30, minutes=0, max_iterations=1, batch_size=4, n_steps=1, n_val=10,
          n_test=5, progress=False)
    model = tmp_path / "dw4.pt"
    export_checkpoint(run / "best.pt", model)
    figures = []
    for path in (run / "best.pt", model):
        out = tmp_path / f"{path.stem}.json"
        assert main(["particles", "evaluate", str(path), "--data", str(small_dw4[0]), "--n-test", "6",
                     "--rk4-steps", "3", "--json", str(out)]) == 0
        assert "test NLL" in capsys.readouterr().out
        figures.append(json.loads(out.read_text()))
    assert figures[0]["n"] == 6 and figures[0]["rk4_steps"] == 3 and "folded" in figures[0]
    assert figures[0]["nll"] == pytest.approx(figures[1]["nll"], abs=1e-9)  # the export holds the same flow
    assert main(["particles", "evaluate", str(tmp_path / "missing.pt"), "--data", str(small_dw4[0])]) == 2
    assert "no such model" in capsys.readouterr().err


def test_a_fold_found_in_validation_rolls_back_to_the_best_fold_free_state(small_dw4, tmp_path):
    """At lr 0.1 a one-step map folds within a few iterations: each such validation sends the weights back
    to the best fold-free state (which alone is selectable) and halves the learning rate."""
    r = train(small_dw4[0], tmp_path / "run", n_train=50, minutes=0, max_iterations=12, batch_size=8, lr=0.1,
              n_steps=1, val_every=1, n_val=50, n_test=20, progress=False)
    history = r["history"]
    assert any(h["rolled_back"] for h in history)
    assert all(h["val_folded"] > 0 for h in history if h["rolled_back"])
    assert r["best_val_nll"] == min(h["val_nll"] for h in history if h["val_folded"] == 0)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["lr_scale"] == 0.5 ** sum(h["rolled_back"] for h in history)
