"""Training configuration: defaults of SI-2.5 for alanine dipeptide and a JSON file (CLI flags: ``commands/train.py``).

A config file is a JSON object whose keys are the fields below, e.g.::

    {"data": ["ala2-part1.npz", "ala2-part2.npz"], "kind": "smooth", "fm": 0.001, "epochs": 10}

Flags given on the command line override the file (``smoothflow train``); the file overrides the defaults.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..flows.generator import KINDS


@dataclass
class TrainConfig:
    data: List[str] = field(default_factory=list)  # .npz files (format of `smoothflow simulate`)
    pdb: Optional[str] = None             # molecule: a PDB file, or a data file that carries it; default
                                          # (set by validate): the first data file's molecule
    out: str = "runs/smoothflow"          # run directory: last.pt, best.pt, metrics.jsonl, config.json
    kind: str = "smooth"                  # one of flows.generator.KINDS: smooth | spline | affine
    inverted: bool = False                # paper section 6.4 orientation (analytic sampling)
    model: Dict[str, Any] = field(default_factory=dict)  # architecture overrides (flows.generator.default_config)
    stride: int = 1                       # use every stride-th frame
    val_fraction: float = 0.1             # held out as contiguous blocks
    val_blocks: int = 10
    kl: float = 0.0                       # omega_k of Eq. 5
    fm: float = 0.0                       # omega_f of Eq. 5 (omega_n = 1 - kl - fm); FM loss per component
    lr: float = 5e-4
    lr_decay: float = 0.7                 # lr multiplied by this after each epoch (or lr_decay_steps steps)
    lr_decay_steps: int = 0               # >0: decay every this many optimiser steps instead of per epoch
                                          # (the paper: ~7,000, its epoch of 0.9 M frames at batch 128)
    batch_size: int = 128                 # per process
    epochs: int = 10
    max_steps: int = 0                    # >0: stop each epoch after this many steps (quick runs)
    seed: int = 0
    kl_samples: int = 128                 # flow samples per step for the reverse KL term
    kl_workers: int = 0                   # OpenMM worker processes for target energies
    val_frames: int = 4096                # validation frames evaluated per epoch (0: all)
    val_kl_samples: int = 256             # flow samples for the validation reverse KL (0: skip)
    checkpoint_every: int = 100           # steps between last.pt writes (and at each epoch end)
    on_nonfinite: str = "stop"            # stop | skip
    threads: int = 0                      # torch threads (0: leave torch's default)
    dtype: str = "float32"                # training precision
    compile: bool = False                 # torch.compile the losses (training.compiled: force matching
                                          # through the hand-written gradient pass); minutes to compile
    resume: bool = False                  # continue from out/last.pt
    init: Optional[str] = None            # start from the weights of this checkpoint (fresh optimiser):
                                          # e.g. NLL pre-training, then force matching

    def validate(self) -> None:
        """ValueError naming the first invalid field; resolves ``pdb`` (None: the first data file)."""
        if not self.data:
            raise ValueError("no training data: give --data FILE.npz (see `smoothflow simulate`)")
        if self.pdb is None:  # the data carry their molecule (md/molecule.py); never a default molecule
            self.pdb = str(self.data[0])
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError("on_nonfinite must be 'stop' or 'skip'")
        if self.dtype not in ("float32", "float64"):
            raise ValueError("dtype must be float32 or float64")
        if self.lr_decay_steps < 0:
            raise ValueError("lr_decay_steps must be >= 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError("val_fraction must be in (0, 1)")

    @classmethod
    def from_file(cls, path: str) -> "TrainConfig":
        values = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)
