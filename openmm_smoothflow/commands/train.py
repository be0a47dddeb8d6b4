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
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            parser.add_argument(flag, nargs="+", default=None, help="training data .npz files")
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
    return config


def run(args) -> int:
    from ..training.trainer import NonFiniteError, Trainer

    config = config_from_args(args)
    trainer = Trainer(config)
    try:
        trainer.fit()
    except NonFiniteError as exc:
        print(f"smoothflow train: {exc}", file=sys.stderr)
        return 3
    if trainer.rank == 0:
        print(f"best epoch {trainer.state['best_epoch']} (validation loss {trainer.state['best_val']:.4f}); "
              f"checkpoints in {trainer.out}")
    return 0
