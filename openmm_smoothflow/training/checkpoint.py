"""Checkpoints: plain dicts of tensors, numbers and strings, written atomically and loaded with
``torch.load(..., weights_only=True)`` (no pickled code is ever executed on load)."""
from __future__ import annotations

import json
from typing import Any, Dict, Tuple

from ..io import load_torch, save_torch
from ..units import PathLike

CHECKPOINT_FORMAT = "openmm_smoothflow/checkpoint-v1"


def generator_state(generator) -> Dict[str, Any]:
    """Everything needed to rebuild ``generator``: architecture as JSON, weights as tensors."""
    return {
        "format": CHECKPOINT_FORMAT,
        "architecture": json.dumps({"config": generator.config, "zmatrix": generator.zmatrix.to_dict(),
                                    "elements": generator.elements}),
        "state_dict": generator.state_dict(),
    }


def build_generator(state: Dict[str, Any]):
    """Inverse of :func:`generator_state`."""
    from ..flows.generator import BoltzmannGenerator
    from ..flows.ic import ZMatrix

    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a smoothflow checkpoint (format {state.get('format')!r})")
    arch = json.loads(state["architecture"])
    dtype = next(v.dtype for v in state["state_dict"].values() if v.is_floating_point())
    generator = BoltzmannGenerator(ZMatrix.from_dict(arch["zmatrix"]), arch["elements"], arch["config"])
    generator.to(dtype).load_state_dict(state["state_dict"])
    return generator


def save_checkpoint(path: PathLike, checkpoint: Dict[str, Any]) -> None:
    save_torch(path, checkpoint)


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    return load_torch(path)


def load_generator(path: PathLike) -> Tuple[Any, Dict[str, Any]]:
    """The generator of a training checkpoint (best.pt / last.pt) and the rest of the checkpoint.

    ``info['provenance']`` is a dict (data files, command, epochs, metrics) for export metadata.
    """
    checkpoint = load_checkpoint(path)
    generator = build_generator(checkpoint["generator"])
    info = {k: v for k, v in checkpoint.items() if k != "generator"}
    info["provenance"] = json.loads(checkpoint.get("provenance", "{}"))
    return generator, info
