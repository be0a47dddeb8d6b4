"""The trainer behind ``smoothflow train``: Eq. 5 losses, Adam with per-epoch decay, validation, best
checkpoint, resumable mid-epoch, and data-parallel under ``torchrun`` (gloo on CPU).

Run directory ``out/``: ``config.json``, ``last.pt`` (every ``checkpoint_every`` steps, each epoch
end and on Ctrl-C), ``best.pt`` (lowest validation loss), ``metrics.jsonl`` (one JSON object per epoch),
``.lock`` while a run holds it (a second run on the same directory is refused). An existing run is
continued with ``resume`` or replaced with ``overwrite``, never silently overwritten; a run that ends
without ``best.pt`` (no finite validation loss) fails (:class:`TrainingFailed`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch

from ..errors import RunFailed, UsageError
from ..io import atomic_write, remove_stale_temporaries, run_lock
from .checkpoint import build_generator, generator_state, load_checkpoint, load_generator, save_checkpoint
from .config import TrainConfig
from .losses import LossWeights, combined_loss


class NonFiniteError(RunFailed):
    """A loss or gradient became NaN/inf (with ``on_nonfinite='stop'``)."""


class TrainingFailed(RunFailed):
    """Training ended without a usable result (no finite validation loss: no ``best.pt``)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during training; ``last.pt`` was written first (``checkpoint`` names it)."""

    def __init__(self, message: str, checkpoint: str, terminated: bool = False):
        super().__init__(message)
        self.checkpoint, self.terminated = checkpoint, terminated


RUN_FILES = ("config.json", "last.pt", "best.pt", "metrics.jsonl")


def _dist():
    """(rank, world_size), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return dist.get_rank(), world
    return 0, 1


class Trainer:
    def __init__(self, config: TrainConfig, log=print, overwrite: bool = False, progress: bool = True):
        from ..flows.generator import BoltzmannGenerator, default_config
        from ..flows.ic import zmatrix_from_topology
        from ..md.systems import load_pdb
        from .data import check_split, load_md_data, split_blocks

        config.validate()
        if overwrite and config.resume:
            raise UsageError("give --resume (continue the run) or --overwrite (replace it), not both")
        self.config, self.log, self.overwrite = config, log, overwrite
        self.rank, self.world = _dist()
        self.progress = progress  # per-epoch bar on rank 0 (sparse lines when stderr is not a terminal)
        self.out = Path(config.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.dtype = getattr(torch, config.dtype)
        torch.manual_seed(config.seed)

        weights = LossWeights(kl=config.kl, fm=config.fm)
        self.weights = weights
        self.data = load_md_data(config.data, require_forces=weights.fm > 0, stride=config.stride)
        self.train_idx, self.val_idx = split_blocks(len(self.data.positions), config.val_fraction, config.val_blocks)
        check_split(len(self.data.positions), self.train_idx, self.val_idx, config.batch_size * self.world)
        self.positions = torch.as_tensor(self.data.positions, dtype=self.dtype)
        self.forces_kt = None
        if self.data.forces is not None:
            self.forces_kt = torch.as_tensor(self.data.forces_kT(), dtype=self.dtype)

        pdb = load_pdb(config.pdb)  # validate() resolved it: a PDB file or the data's molecule
        self.topology = pdb.topology
        if pdb.topology.getNumAtoms() != self.positions.shape[1]:
            raise ValueError(f"topology has {pdb.topology.getNumAtoms()} atoms, data {self.positions.shape[1]}")
        elements = [a.element.symbol for a in pdb.topology.atoms()]
        gen_config = default_config(**{**config.model, "kind": config.kind, "inverted": config.inverted,
                                       "temperature": self.data.temperature})
        self.generator = BoltzmannGenerator(zmatrix_from_topology(pdb.topology), elements, gen_config).to(self.dtype)
        # rings: the restraint's flat bottom spans the training frames (R = 0 on each; no-op without rings)
        self.generator.fit_ring_restraint(self.positions[torch.as_tensor(self.train_idx)])
        if config.init:
            start, _ = load_generator(config.init)
            if start.config != self.generator.config:
                raise ValueError(f"--init {config.init}: its architecture differs from this run's")
            self.generator.load_state_dict(start.to(self.dtype).state_dict())
        self.model = self.generator
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.generator)
        if config.compile:  # the losses through torch.compile (training/compiled.py)
            from .compiled import compiled_flow

            self.model = compiled_flow(self.generator, self.world, log)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr)
        self.target = self._make_target() if (weights.kl > 0 or config.val_kl_samples > 0) else None
        self.state: Dict[str, Any] = dict(epoch=0, step=0, best_val=math.inf, best_epoch=-1, skipped=0,
                                          seconds=0.0)

    def _make_target(self):
        from ..md.systems import classical_system
        from .target import OpenMMTarget

        return OpenMMTarget(classical_system(self.topology), self.data.temperature,
                            n_workers=self.config.kl_workers)

    # ---- checkpoints -------------------------------------------------------------------------------
    def _checkpoint(self) -> Dict[str, Any]:
        rng = getattr(self, "_rng_at_step", None)  # inside an interrupted step: the RNG at its start
        return {"generator": generator_state(self.generator), "optimizer": self.optimizer.state_dict(),
                "state": json.dumps(self.state), "config": self.config.to_json(),
                "rng": torch.get_rng_state() if rng is None else rng, "provenance": json.dumps(self._provenance())}

    def _provenance(self) -> Dict[str, Any]:
        return {"data": [str(p) for p in self.config.data], "frames": int(len(self.positions)),
                "init": self.config.init,
                "stride": self.config.stride, "loss_weights": {"kl": self.config.kl, "fm": self.config.fm},
                "command": " ".join(sys.argv), "epochs_done": self.state["epoch"],
                "best_epoch": self.state["best_epoch"], "best_val_loss": self.state["best_val"],
                "train_seconds": round(self.state["seconds"], 1)}

    def save(self, name: str) -> None:
        if self.rank == 0:
            save_checkpoint(self.out / name, self._checkpoint())

    def resume(self) -> bool:
        path = self.out / "last.pt"
        if not path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from ({path} does not exist); "
                                    "start without --resume")
        checkpoint = load_checkpoint(path)
        restored = build_generator(checkpoint["generator"])
        self.generator.load_state_dict(restored.state_dict())
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.state.update(json.loads(checkpoint["state"]))
        torch.set_rng_state(checkpoint["rng"])
        self.log(f"resumed from {path}: epoch {self.state['epoch']}, step {self.state['step']}")
        return True

    # ---- one epoch ---------------------------------------------------------------------------------
    def _batches(self, epoch: int):
        order = torch.randperm(len(self.train_idx), generator=torch.Generator().manual_seed(
            self.config.seed * 100003 + epoch))
        order = torch.as_tensor(self.train_idx)[order]
        per_step = self.config.batch_size * self.world
        n_steps = len(order) // per_step
        if self.config.max_steps:
            n_steps = min(n_steps, self.config.max_steps)
        for step in range(n_steps):
            chunk = order[step * per_step:(step + 1) * per_step]
            yield step, n_steps, chunk[self.rank::self.world]

    def _losses(self, idx: torch.Tensor, n_kl: int) -> Dict[str, torch.Tensor]:
        forces = self.forces_kt[idx] if self.forces_kt is not None else None
        return combined_loss(self.model, self.positions[idx], forces, self.weights, self.target, n_kl)

    def lr_at(self, epoch: int, step: int) -> float:
        """Adam's learning rate at ``step`` of ``epoch``: ``lr * lr_decay^epoch``, or with ``lr_decay_steps``
        ``lr * lr_decay^floor(global step / lr_decay_steps)`` (the paper's x 0.7 per epoch of ~7,000 steps,
        whatever the number of frames in an epoch here)."""
        if self.config.lr_decay_steps:
            n_steps = len(self.train_idx) // (self.config.batch_size * self.world)
            if self.config.max_steps:
                n_steps = min(n_steps, self.config.max_steps)
            return self.config.lr * self.config.lr_decay ** ((epoch * n_steps + step) // self.config.lr_decay_steps)
        return self.config.lr * self.config.lr_decay ** epoch

    def _set_lr(self, epoch: int, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(epoch, step)

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        from ..progress import progress_bar

        self._set_lr(epoch, 0)
        self.generator.train()
        sums: Dict[str, float] = {}
        count = 0
        bar = progress_bar(total=None, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="batch",
                           enabled=self.progress and self.rank == 0, leave=False)
        try:  # closed before an interrupt or error message is printed
            for step, n_steps, idx in self._batches(epoch):
                bar.total = n_steps
                if step < self.state["step"]:
                    bar.update(1)
                    continue  # done before the checkpoint this run resumed from
                self._set_lr(epoch, step)
                self._rng_at_step = torch.get_rng_state()  # a Ctrl-C inside this step checkpoints its start
                terms = self._losses(idx, self.config.kl_samples)
                self.optimizer.zero_grad(set_to_none=True)
                finite = bool(torch.isfinite(terms["loss"]))
                if finite:
                    terms["loss"].backward()
                    finite = all(bool(torch.isfinite(p.grad).all()) for p in self.generator.parameters()
                                 if p.grad is not None)
                if not finite:
                    where = f"epoch {epoch + 1}, step {step + 1}"
                    if self.config.on_nonfinite == "stop":
                        last = self.out / "last.pt"
                        raise NonFiniteError(f"non-finite loss or gradient at {where} "
                                             f"(loss {float(terms['loss'].detach())}); "
                                             + (f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written")
                                             + " (--on-nonfinite skip skips such batches)")
                    self.state["skipped"] += 1
                    self.state["step"], self._rng_at_step = step + 1, None
                    self.log(f"skipped a non-finite batch at {where} ({self.state['skipped']} so far)")
                else:
                    self.optimizer.step()
                    self.state["step"], self._rng_at_step = step + 1, None
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach())
                    count += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(terms['loss'].detach()):.3f}")
                if self.config.checkpoint_every and (step + 1) % self.config.checkpoint_every == 0:
                    self.save("last.pt")
        finally:
            bar.close()
        return {f"train_{k}": v / max(count, 1) for k, v in sums.items()}

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        from .metrics import validation_metrics

        idx = torch.as_tensor(self.val_idx)
        if self.config.val_frames and len(idx) > self.config.val_frames:
            idx = idx[torch.linspace(0, len(idx) - 1, self.config.val_frames).long()]
        self.generator.eval()
        forces = self.forces_kt[idx] if self.forces_kt is not None else None
        metrics = validation_metrics(self.generator, self.positions[idx], forces,
                                     self.target if self.config.val_kl_samples else None,
                                     self.config.val_kl_samples)
        metrics["val_loss"] = self.weights.combine(metrics["val_nll"], metrics.get("val_fm"),
                                                   metrics.get("val_kl", math.nan))
        return metrics

    # ---- the run -----------------------------------------------------------------------------------
    def _prepare_directory(self) -> None:
        """Refuse to overwrite an existing run unless told to; remove temporaries of killed writes."""
        existing = [name for name in RUN_FILES if (self.out / name).exists()]
        removed = remove_stale_temporaries(self.out)
        if removed:
            self.log(f"removed {len(removed)} partial file(s) of an interrupted write in {self.out}")
        if self.config.resume or not existing:
            return
        if not self.overwrite:
            raise FileExistsError(f"{self.out} already holds a run ({', '.join(existing)}): continue it with "
                                  "--resume, replace it with --overwrite, or choose another --out")
        for name in existing:
            (self.out / name).unlink()
        self.log(f"--overwrite: removed {', '.join(existing)} from {self.out}")

    def fit(self) -> Dict[str, Any]:
        """Train (resuming or replacing the run in ``out`` as configured); returns the last epoch's record.

        Raises :class:`TrainingFailed` when no epoch gave a finite validation loss (no ``best.pt``), and
        :class:`TrainingInterrupted` on Ctrl-C/SIGTERM after writing ``last.pt``.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out) if self.rank == 0 else contextlib.nullcontext():
            if self.rank == 0:
                self._prepare_directory()
            if self.config.resume:
                self.resume()
            try:
                return self._fit()
            except KeyboardInterrupt as exc:
                self.save("last.pt")
                where = f"epoch {self.state['epoch'] + 1}, step {self.state['step']}"
                raise TrainingInterrupted(f"training interrupted at {where}; checkpoint {self.out / 'last.pt'}: "
                                          "continue with --resume", str(self.out / "last.pt"),
                                          terminated=type(exc).__name__ == "Terminated") from None
            finally:
                if self.target is not None:
                    self.target.close()

    def _fit(self) -> Dict[str, Any]:
        if self.rank == 0:
            with atomic_write(self.out / "config.json") as tmp:
                tmp.write_text(self.config.to_json())
        last: Dict[str, Any] = {}
        while self.state["epoch"] < self.config.epochs:
            epoch = self.state["epoch"]
            start = time.perf_counter()
            record: Dict[str, Any] = {"epoch": epoch + 1, "lr": self.lr_at(epoch, 0)}
            record.update(self.train_epoch(epoch))
            record.update(self.validate())
            self.state["seconds"] += time.perf_counter() - start
            record.update(seconds=round(time.perf_counter() - start, 2), skipped=self.state["skipped"])
            self.state.update(epoch=epoch + 1, step=0)
            if math.isfinite(record["val_loss"]) and record["val_loss"] < self.state["best_val"]:
                self.state.update(best_val=record["val_loss"], best_epoch=epoch + 1)
                self.save("best.pt")
            self.save("last.pt")
            if self.rank == 0:
                with open(self.out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in record.items()))
            last = record
        if self.state["best_epoch"] < 1 or (self.rank == 0 and not (self.out / "best.pt").exists()):
            raise TrainingFailed(f"no epoch of {self.config.epochs} gave a finite validation loss: no best.pt "
                                 f"written (last validation loss {last.get('val_loss')}); check the data "
                                 "and the learning rate")
        return last
