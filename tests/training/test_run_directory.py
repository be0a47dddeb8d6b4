"""Run directories and training data (issue reproductions 4-6): locks, no silent overwrite, --resume
without a checkpoint, Ctrl-C, partial files, fsync; non-finite / too few / Angstrom data; no best.pt."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import TINY_MODEL
from openmm_smoothflow import cli, io
from openmm_smoothflow.errors import EXIT_INTERRUPTED, EXIT_USAGE
from openmm_smoothflow.training.config import TrainConfig
from openmm_smoothflow.training.trainer import NonFiniteError, Trainer, TrainingFailed, TrainingInterrupted

QUIET = dict(log=lambda *a: None)


def config(data, out, **kw):
    base = dict(data=[str(data)], out=str(out), epochs=1, max_steps=2, batch_size=16, fm=0.001, val_kl_samples=0,
                val_frames=32, model=TINY_MODEL, threads=1, checkpoint_every=1)
    base.update(kw)
    return TrainConfig(**base)


def train_argv(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--max-steps", "2", "--batch-size",
            "16", "--fm", "0.001", "--val-kl-samples", "0", "--val-frames", "32", "--threads", "1",
            "--model", json.dumps(TINY_MODEL), *extra]


@pytest.fixture()
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_on_a_busy_directory_is_refused(md_data, tmp_path, sleeper, capsys):
    """Reproduction 4: two runs on one --out both exited 0 with mixed files."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")  # a live process holds it
    with pytest.raises(io.RunDirectoryBusy, match=f"in use by process {sleeper.pid}"):
        Trainer(config(md_data, out), **QUIET).fit()
    assert cli.main(train_argv(md_data, out)) == EXIT_USAGE
    assert f"is in use by process {sleeper.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    sleeper.kill()
    sleeper.wait()  # now the lock is stale: taken over, and released at the end
    Trainer(config(md_data, out), **QUIET).fit()
    assert (out / "best.pt").exists() and not (out / ".lock").exists()


def test_an_existing_run_is_kept_unless_resumed_or_overwritten(md_data, tmp_path, capsys):
    """Reproduction 4: a rerun without --resume overwrote a better best.pt; --resume without last.pt
    started fresh."""
    out = tmp_path / "run"
    Trainer(config(md_data, out), **QUIET).fit()
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt", "metrics.jsonl", "config.json")}
    with pytest.raises(FileExistsError, match="already holds a run .*--resume.*--overwrite"):
        Trainer(config(md_data, out, seed=1), **QUIET).fit()
    assert cli.main(train_argv(md_data, out, "--seed", "1")) == EXIT_USAGE
    assert "already holds a run" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in before} == before
    with pytest.raises(ValueError, match="--resume .* or --overwrite .*not both"):
        Trainer(config(md_data, out, resume=True), overwrite=True, **QUIET)
    Trainer(config(md_data, out, seed=1), overwrite=True, **QUIET).fit()
    assert (out / "best.pt").read_bytes() != before["best.pt"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # replaced, not appended to
    with pytest.raises(FileNotFoundError, match=r"--resume: no checkpoint to resume from .*last.pt"):
        Trainer(config(md_data, tmp_path / "fresh", resume=True), **QUIET).fit()
    assert not (tmp_path / "fresh" / "best.pt").exists()


def test_killed_writes_leave_no_partial_files_and_writes_are_fsynced(tmp_path, monkeypatch):
    """Reproduction 4: a killed write left hidden partial files."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".best.pt.tmp-{dead.pid}-abc123.pt"
    stale.write_bytes(b"partial")
    live = tmp_path / f".best.pt.tmp-{os.getpid()}-def456.pt"  # a write in progress in this process
    live.write_bytes(b"in progress")
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(io.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(io.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    with io.atomic_write(tmp_path / "best.pt") as tmp:
        tmp.write_bytes(b"new")
    assert calls[:2] == ["fsync", "replace"] and calls[2:] == ["fsync"]  # file, rename, directory
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "best.pt"]
    for interruption in (OSError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)), io.atomic_write(tmp_path / "best.pt") as tmp:
            tmp.write_bytes(b"half")
            raise interruption
    assert (tmp_path / "best.pt").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "best.pt"]


def write_data(md_data, path, **changes):
    with np.load(md_data) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, change in changes.items():
        arrays[key] = change(arrays[key].copy())
    np.savez(path, **arrays)
    return path


def nan_at(frame):
    def change(a):
        a[frame] = np.nan
        return a
    return change


@pytest.mark.parametrize("changes, match", [
    (dict(forces=nan_at(395)), r"forces contain non-finite values in 1 frame\(s\), the first at frame 395"),
    (dict(forces=nan_at(7)), r"forces contain non-finite values .* frame 7 "),
    (dict(energies=nan_at(12)), r"energies contain non-finite values .* frame 12 "),
    (dict(positions=nan_at(3)), r"positions contain non-finite values .* frame 3 "),
    (dict(positions=lambda a: a * 10.0), r"positions look like Angstrom .* must be in nm"),
    (dict(positions=lambda a: a[:1], forces=lambda a: a[:1], energies=lambda a: a[:1]), "too few frames: 1"),
    (dict(positions=lambda a: a[:3], forces=lambda a: a[:3], energies=lambda a: a[:3]), "too few frames: 3"),
])
def test_bad_training_data_is_named_by_file_and_frame(md_data, tmp_path, changes, match):
    """Reproduction 5: NaN forces in the validation block gave rc 0 and no best.pt; in training frames
    rc 3 pointing at a missing last.pt; 1 or 3 frames a torch.cat error; Angstrom trained silently."""
    path = write_data(md_data, tmp_path / "bad.npz", **changes)
    with pytest.raises(ValueError, match=match) as info:
        Trainer(config(path, tmp_path / "run"), **QUIET)
    assert str(path) in str(info.value) or "too few" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_run_without_a_best_checkpoint_fails(md_data, tmp_path):
    trainer = Trainer(config(md_data, tmp_path / "run"), **QUIET)
    trainer.positions[trainer.val_idx] = float("nan")  # no finite validation loss in any epoch
    with pytest.raises(TrainingFailed, match="no epoch of 1 gave a finite validation loss: no best.pt"):
        trainer.fit()
    assert not (tmp_path / "run" / "best.pt").exists()
    stopper = Trainer(config(md_data, tmp_path / "stop"), **QUIET)
    stopper.positions[:] = float("nan")
    with pytest.raises(NonFiniteError, match="no checkpoint was written"):
        stopper.fit()


def test_ctrl_c_writes_a_checkpoint_and_the_run_resumes(md_data, tmp_path, monkeypatch):
    trainer = Trainer(config(md_data, tmp_path / "run", max_steps=6), **QUIET)
    losses = trainer._losses

    def interrupt_at_step_4(idx, n_kl):
        if trainer.state["step"] == 3:
            raise KeyboardInterrupt
        return losses(idx, n_kl)

    monkeypatch.setattr(trainer, "_losses", interrupt_at_step_4)
    with pytest.raises(TrainingInterrupted, match=r"interrupted at epoch 1, step 3; checkpoint .*last.pt: "
                                                   r"continue with --resume"):
        trainer.fit()
    state = json.loads(torch.load(tmp_path / "run" / "last.pt", weights_only=True)["state"])
    assert (state["epoch"], state["step"]) == (0, 3)
    assert not (tmp_path / "run" / ".lock").exists()
    resumed = Trainer(config(md_data, tmp_path / "run", max_steps=6, resume=True), **QUIET)
    resumed.fit()
    assert resumed.state["epoch"] == 1 and (tmp_path / "run" / "best.pt").exists()


def test_sigint_to_smoothflow_train_exits_130_with_a_checkpoint(md_data, tmp_path):
    """Reproduction 6: Ctrl-C printed a traceback and lost the work since the last checkpoint."""
    out = tmp_path / "run"
    argv = train_argv(md_data, out, "--max-steps", "1000", "--checkpoint-every", "1000", "--epochs", "50")
    # SIGINT back to its default in the child: a shell's background job starts with it ignored
    proc = subprocess.Popen([sys.executable, "-m", "openmm_smoothflow.cli"] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "config.json").exists():
        time.sleep(0.05)
    time.sleep(1.0)  # a few steps, none checkpointed yet (checkpoint every 1000)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err
    assert "continue with --resume" in err.strip().splitlines()[-1]
    state = json.loads(torch.load(out / "last.pt", weights_only=True)["state"])
    assert state["epoch"] >= 0 and (state["step"] > 0 or state["epoch"] > 0)
