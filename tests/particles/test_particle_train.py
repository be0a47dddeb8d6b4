"""Training runs of the particle flow: checkpoints (weights_only), resume, export of the best weights."""
import json

import pytest
import torch

from openmm_smoothflow.particles.data import load_dataset
from openmm_smoothflow.particles.export import export_checkpoint, load_particle_model
from openmm_smoothflow.particles.md import no_fusion
from openmm_smoothflow.particles.systems import DW4, UNITS
from openmm_smoothflow.particles.train import load_flow, train


def test_train_resume_and_export(small_dw4, tmp_path):
    dw4_data = small_dw4[0]
    out = tmp_path / "run"
    kw = dict(n_train=50, minutes=0, batch_size=8, n_steps=1, val_every=2, n_val=20, n_test=50, progress=False)
    r1 = train(dw4_data, out, max_iterations=2, **kw)
    assert r1["iterations"] == 2 and r1["test"]["n"] == 50 and r1["test"]["nll"] > 0
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
