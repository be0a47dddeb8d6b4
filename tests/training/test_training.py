"""Losses, the trainer, checkpoints, resume after a kill, non-finite handling, data parallel."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL
from openmm_smoothflow.training.checkpoint import load_generator
from openmm_smoothflow.training.config import TrainConfig
from openmm_smoothflow.training.losses import LossWeights
from openmm_smoothflow.training.trainer import NonFiniteError, Trainer

SMOOTHFLOW = [sys.executable, "-m", "openmm_smoothflow.cli"]


def tiny_config(md_data, out, **kw):
    base = dict(data=[str(md_data)], out=str(out), epochs=2, batch_size=32, fm=0.001, val_kl_samples=16,
                model=TINY_MODEL, threads=1, checkpoint_every=2)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_weights_are_validated():
    assert LossWeights(kl=0.1, fm=0.001).nll == pytest.approx(0.899)
    with pytest.raises(ValueError):
        LossWeights(kl=0.7, fm=0.5)


def test_force_matching_loss_is_the_mean_squared_force_error_per_component():
    from openmm_smoothflow.training.losses import force_matching_terms
    from openmm_smoothflow.training.metrics import data_metrics

    class Harmonic(torch.nn.Module):  # u = sum |x|^2 / 2 (kT): flow force -x
        def forward(self, x):
            return 0.5 * (x**2).sum(dim=(1, 2))

    x = torch.randn(5, 4, 3, dtype=torch.float64)
    forces = torch.randn(5, 4, 3, dtype=torch.float64)
    energy, residual = force_matching_terms(Harmonic(), x, forces, create_graph=False)
    torch.testing.assert_close(residual, ((forces + x) ** 2).mean(dim=(1, 2)))
    metrics = data_metrics(Harmonic(), x, forces)
    assert metrics["val_force_rmse"] == pytest.approx(float(((forces + x) ** 2).mean().sqrt()))
    assert metrics["val_fm"] == pytest.approx(metrics["val_force_rmse"] ** 2)


def test_sample_metrics_cut_off_clashing_samples():
    from openmm_smoothflow.training.metrics import importance_metrics

    log_q = torch.zeros(4, dtype=torch.float64)
    m = importance_metrics(torch.tensor([10.0, 10.0, 1e7, float("nan")], dtype=torch.float64), log_q)
    # cut-off: 1e7 -> 1e3 + log(1 + 1e7 - 1e3); NaN -> 1e9 kT
    expected = (20.0 + 1e3 + torch.log1p(torch.tensor(1e7 - 1e3)).item() + 1e9) / 4
    assert m["val_kl"] == pytest.approx(expected)
    assert m["val_clash_fraction"] == 0.5 and m["val_nonfinite_samples"] == 1
    assert m["val_ess"] == pytest.approx(0.5)  # two equal weights of four samples


def test_training_improves_and_writes_loadable_checkpoints(md_data, tmp_path):
    trainer = Trainer(tiny_config(md_data, tmp_path / "run", epochs=3), log=lambda *a: None)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert {"val_nll", "val_fm", "val_force_rmse", "val_kl", "val_ess"} <= set(records[0])
    checkpoint = torch.load(tmp_path / "run" / "best.pt", weights_only=True)  # no pickled code
    assert "optimizer" in checkpoint
    generator, info = load_generator(tmp_path / "run" / "best.pt")
    assert info["provenance"]["data"] == [str(md_data)] and info["provenance"]["best_epoch"] >= 1
    last, _ = load_generator(tmp_path / "run" / "last.pt")
    x = trainer.positions[:4]
    torch.testing.assert_close(last.energy(x), trainer.generator.energy(x), rtol=0, atol=0)


def test_missing_forces_are_rejected(md_data, tmp_path):
    import numpy as np

    with np.load(md_data) as npz:
        np.savez(tmp_path / "noforces.npz", positions=npz["positions"], temperature=npz["temperature"])
    with pytest.raises(ValueError, match="forces"):
        Trainer(tiny_config(tmp_path / "noforces.npz", tmp_path / "run"))


def test_same_seed_same_weights(md_data, tmp_path):
    a = Trainer(tiny_config(md_data, tmp_path / "a", epochs=1, val_kl_samples=0), log=lambda *a: None)
    b = Trainer(tiny_config(md_data, tmp_path / "b", epochs=1, val_kl_samples=0), log=lambda *a: None)
    a.fit(), b.fit()
    for (name, pa), pb in zip(a.generator.state_dict().items(), b.generator.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_nonfinite_loss_stops_with_the_step_or_is_skipped(md_data, tmp_path):
    trainer = Trainer(tiny_config(md_data, tmp_path / "stop", epochs=1), log=lambda *a: None)
    trainer.positions[:] = float("nan")
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 1"):
        trainer.fit()
    assert not (tmp_path / "stop" / "best.pt").exists()
    skipper = Trainer(tiny_config(md_data, tmp_path / "skip", epochs=1, max_steps=3, on_nonfinite="skip"),
                      log=lambda *a: None)
    skipper.positions[skipper.train_idx] = float("nan")
    skipper.fit()
    assert skipper.state["skipped"] == 3


def test_killed_training_resumes_without_losing_work(md_data, tmp_path):
    """A real `smoothflow train` process is killed mid-epoch; the resumed run ends with the same
    weights as an uninterrupted run (same seed, deterministic data order, restored RNG)."""
    args = ["train", "--data", str(md_data), "--epochs", "2", "--batch-size", "16", "--fm", "0.001",
            "--val-kl-samples", "0", "--threads", "1", "--checkpoint-every", "1", "--model", json.dumps(TINY_MODEL)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(SMOOTHFLOW + args + ["--out", str(tmp_path / "full")], check=True, env=env,
                   capture_output=True, timeout=300)
    run = tmp_path / "killed"
    proc = subprocess.Popen(SMOOTHFLOW + args + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few steps of epoch 1 are checkpointed
        if (run / "last.pt").exists() and json.loads(torch.load(run / "last.pt", weights_only=True)["state"])["step"] >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = json.loads(torch.load(run / "last.pt", weights_only=True)["state"])
    assert state["epoch"] == 0 and state["step"] >= 4  # killed mid-epoch 1
    subprocess.run(SMOOTHFLOW + args + ["--out", str(run), "--resume"], check=True, env=env,
                   capture_output=True, timeout=300)
    full, _ = load_generator(tmp_path / "full" / "last.pt")
    resumed, _ = load_generator(run / "last.pt")
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_distributed_replicas_hold_identical_weights(md_data, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    worker = Path(__file__).with_name("ddp_worker.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29581",
                    str(worker), str(md_data), str(out)], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    rank0, rank1 = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    initial = Trainer(tiny_config(md_data, tmp_path / "init"), log=lambda *a: None).generator.state_dict()
    assert any(not torch.equal(initial[n], rank0[n]) for n in rank0)  # they did train
