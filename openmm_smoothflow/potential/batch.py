"""Energies and forces of many frames at once from an exported model, for analysis and reweighting.

>>> from openmm_smoothflow.potential import energies_and_forces
>>> energies, forces = energies_and_forces("smooth.pt", positions)   # positions (B, N, 3) nm
>>> energies.shape, forces.shape                                      # (B,) kJ/mol, (B, N, 3) kJ/mol/nm

The same numbers as the model's TorchForce in an OpenMM Context, frame by frame (the same scripted
energy, evaluated batched), in float64 numpy arrays.
"""
import json
from typing import Tuple, Union

import numpy as np
import torch

from ..units import PathLike
from .periodic import MakeWhole
from .torchscript import load_model


def energies_and_forces(model: Union[PathLike, torch.jit.ScriptModule], positions, box=None,
                        batch_size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
    """Energies (B,) in kJ/mol and forces (B, N, 3) in kJ/mol/nm of ``positions`` (B, N, 3) or (N, 3) in nm.

    ``model``: an export's path or the loaded module (:func:`.torchscript.load_model`). ``box``: box
    vectors (3, 3) nm (rows a, b, c, OpenMM's reduced form) or (B, 3, 3), one per frame: each frame's
    molecule is first made whole by minimum image along its bonds, as in a periodic System.
    ``batch_size``: frames per evaluation (memory grows with it). Computed in the export's precision.
    """
    module = load_model(model) if not isinstance(model, torch.jit.ScriptModule) else model
    meta = json.loads(module.metadata)
    dtype = getattr(torch, meta.get("dtype", "float64"))
    x = np.asarray(positions, dtype=np.float64)
    single = x.ndim == 2
    x = x[None] if single else x
    if x.ndim != 3 or x.shape[1:] != (meta["atom_count"], 3):
        raise ValueError(f"positions must be (B, {meta['atom_count']}, 3) or ({meta['atom_count']}, 3) in nm, "
                         f"got {np.shape(positions)}")
    if not np.isfinite(x).all():
        raise ValueError("positions contain NaN or inf")
    x = torch.from_numpy(x).to(dtype)
    if box is not None:
        boxes = torch.as_tensor(np.broadcast_to(np.asarray(box, dtype=np.float64), (len(x), 3, 3))).to(dtype)
        make_whole = MakeWhole.from_metadata(meta)
        x = torch.stack([make_whole(frame, b) for frame, b in zip(x, boxes)])
    energies, forces = [], []
    for start in range(0, len(x), max(int(batch_size), 1)):
        e, f = _evaluate(module, x[start:start + batch_size])
        energies.append(e)
        forces.append(f)
    energies, forces = np.concatenate(energies), np.concatenate(forces)
    return (energies[0], forces[0]) if single else (energies, forces)


def _evaluate(module, x: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """(energies (b,) kJ/mol, forces (b, N, 3) kJ/mol/nm) of one chunk (b, N, 3) in the module's dtype."""
    x = x.clone().requires_grad_(True)
    # without the profiling executor's re-optimisation for every new batch shape (seconds each)
    with torch.enable_grad(), torch.jit.optimized_execution(False):
        if hasattr(module, "generator") and hasattr(module, "kT"):  # batched: the flow's u in kT times kT
            energy = module.generator(x) * float(module.kT)
        else:  # any other export: frame by frame through its forward
            energy = torch.stack([module(frame) for frame in x])
        (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach().double().numpy(), -grad.double().numpy()
