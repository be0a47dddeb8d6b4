"""``smoothflow train``: train a Boltzmann generator on MD data (``training/trainer.py``).

One flag per :class:`~openmm_smoothflow.training.config.TrainConfig` field; a flag left out keeps the
config file's (``--config``) or the default value.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..training.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; a flag left out keeps the file's (or default) value."""
    parser.add_argument("--config", help="JSON config file (keys: the long flags below, with _)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run in --out (default: refuse; --resume continues it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            parser.add_argument(flag, nargs="+", default=None, help="training data .npz files")
        elif f.name == "pdb":
            parser.add_argument(flag, default=None, help="PDB file of the molecule (default: the one the data carry)")
        elif f.name == "model":
            parser.add_argument(flag, type=json.loads, default=None, metavar="JSON",
                                help='architecture overrides, e.g. \'{"hidden": [32, 32]}\'')
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None, metavar=f.name.upper())


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(config, f.name, value)
    config.validate()
    check_numbers(config)
    return config


# field -> (lowest value, whether it is allowed): the bounds the trainer needs
_BOUNDS = {"stride": (1, True), "val_blocks": (1, True), "batch_size": (1, True), "epochs": (1, True),
           "kl_samples": (1, True), "max_steps": (0, True), "kl_workers": (0, True), "val_frames": (0, True),
           "val_kl_samples": (0, True), "checkpoint_every": (0, True), "threads": (0, True), "seed": (0, True),
           "lr": (0.0, False), "lr_decay": (0.0, False), "kl": (0.0, True), "fm": (0.0, True),
           "lr_decay_steps": (0, True)}


def check_numbers(config: TrainConfig) -> None:
    """UsageError naming the first config value out of its range (counts >= 1 or >= 0, rates > 0)."""
    import math

    from ..errors import UsageError

    for name, (low, inclusive) in _BOUNDS.items():
        if not hasattr(config, name):
            continue
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= low if inclusive else value > low)
        if ok and isinstance(low, int) and int(value) != value:
            ok = False
        if not ok:
            bound = f"{'>=' if inclusive else '>'} {low}"
            raise UsageError(f"--{name.replace('_', '-')} must be {'an integer ' if isinstance(low, int) else ''}"
                             f"{bound}, got {value!r}")
    if config.lr_decay > 1:
        raise UsageError(f"--lr-decay must be in (0, 1], got {config.lr_decay}")


def run(args) -> int:
    """Exit codes: 0 trained (best.pt written), 1 failed (non-finite loss, no best.pt), 2 bad input or a
    refused run directory, 130 interrupted (last.pt written first; continue with --resume)."""
    from ..errors import EXIT_INTERRUPTED, EXIT_TERMINATED
    from ..training.trainer import Trainer, TrainingInterrupted

    config = config_from_args(args)
    trainer = Trainer(config, overwrite=bool(getattr(args, "overwrite", False)),
                      progress=not getattr(args, "no_progress", False))
    try:
        trainer.fit()
    except TrainingInterrupted as exc:
        print(f"smoothflow train: {exc}", file=sys.stderr)
        return EXIT_TERMINATED if exc.terminated else EXIT_INTERRUPTED
    if trainer.rank == 0:
        print(f"best epoch {trainer.state['best_epoch']} (validation loss {trainer.state['best_val']:.4f}); "
              f"checkpoints in {trainer.out}")
    return 0
