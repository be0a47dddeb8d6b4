"""MD data for training: loading ``.npz`` files, train/validation splits (units: ``units.py``).

Files hold ``positions`` (frames, N, 3) nm, optionally ``forces`` (frames, N, 3) kJ/mol/nm and
``energies`` (frames,) kJ/mol, and ``temperature`` K (see ``md/sampling.py`` and the data README).
Frames are time-ordered and correlated over tens of ps, so validation frames are taken as contiguous
blocks (:func:`split_blocks`), never as random frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..md.sampling import open_data
from ..units import PathLike, kT

_TEMPERATURE_RTOL = 1e-6


@dataclass
class MDData:
    """Concatenated MD frames as float64 torch tensors (CPU).

    ``positions`` (F, N, 3) nm; ``forces`` (F, N, 3) kJ/mol/nm or None; ``energies`` (F,) kJ/mol or
    None; ``temperature`` K; ``sources`` one ``(path, first_frame, n_frames)`` per file (frame indices
    into the concatenated, strided arrays) so that splits by trajectory are possible;
    ``atom_names``/``elements`` from the files when stored.
    """

    positions: Tensor
    forces: Optional[Tensor]
    energies: Optional[Tensor]
    temperature: float
    sources: List[Tuple[str, int, int]] = field(default_factory=list)
    atom_names: Optional[List[str]] = None
    elements: Optional[List[str]] = None

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    @property
    def kT(self) -> float:
        """k_B T in kJ/mol at the data's temperature."""
        return kT(self.temperature)

    def forces_kT(self) -> Tensor:
        """Forces in kT/nm (ValueError if the data has none)."""
        if self.forces is None:
            raise ValueError("this data has no forces")
        return self.forces / self.kT

    def energies_kT(self) -> Tensor:
        """Potential energies in kT (ValueError if the data has none)."""
        if self.energies is None:
            raise ValueError("this data has no energies")
        return self.energies / self.kT


def _as_paths(paths: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError("no data files given")
    return out


def load_md_data(
    paths: Union[PathLike, Sequence[PathLike]], require_forces: bool = False, stride: int = 1
) -> MDData:
    """Load and concatenate one or several ``.npz`` data files (every ``stride``-th frame of each).

    All files must have the same atom count and temperature. With ``require_forces`` every file must
    hold ``forces`` (ValueError naming the file otherwise); without it, forces (and energies) are kept
    only when every file has them, else they are None.
    """
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    stride = int(stride)
    files = _as_paths(paths)
    positions, forces, energies, sources = [], [], [], []
    temperature: Optional[float] = None
    atom_names = elements = None
    first = None
    offset = 0
    for path in files:
        with open_data(path) as npz:
            keys = set(npz.files)
            if "positions" not in keys:
                raise ValueError(f"{path}: no 'positions' array (keys: {sorted(keys)})")
            if "temperature" not in keys:
                raise ValueError(f"{path}: no 'temperature' entry (keys: {sorted(keys)})")
            pos = np.asarray(npz["positions"])
            if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] == 0:
                raise ValueError(f"{path}: positions must have shape (frames > 0, atoms, 3), got {pos.shape}")
            temp = float(np.asarray(npz["temperature"]).reshape(-1)[0])
            if first is None:
                first, temperature = path, temp
            elif pos.shape[1] != positions[0].shape[1]:
                raise ValueError(
                    f"{path}: {pos.shape[1]} atoms, but {first} has {positions[0].shape[1]} atoms"
                )
            elif abs(temp - temperature) > _TEMPERATURE_RTOL * abs(temperature):
                raise ValueError(f"{path}: temperature {temp} K, but {first} has {temperature} K")
            if require_forces and "forces" not in keys:
                raise ValueError(f"{path}: forces are required but this file has no 'forces' array")
            pos = pos[::stride]
            _check_finite(pos, "positions", path, stride)
            _check_nanometres(pos, path)
            positions.append(pos)
            forces.append(_optional(npz, "forces", pos.shape, stride, path))
            energies.append(_optional(npz, "energies", pos.shape[:1], stride, path))
            _check_finite(forces[-1], "forces", path, stride)
            _check_finite(energies[-1], "energies", path, stride)
            for key, known in (("atom_names", atom_names), ("elements", elements)):
                if key in keys and known is not None and [str(a) for a in npz[key]] != known:
                    raise ValueError(f"{path}: its {key.replace('_', ' ')} differ from those of an earlier file: "
                                     "the files hold different molecules")
            if atom_names is None and "atom_names" in keys:
                atom_names = [str(a) for a in npz["atom_names"]]
            if elements is None and "elements" in keys:
                elements = [str(e) for e in npz["elements"]]
            sources.append((str(path), offset, len(pos)))
            offset += len(pos)

    def cat(arrays) -> Optional[Tensor]:
        if any(a is None for a in arrays):
            return None
        return torch.from_numpy(np.concatenate(arrays).astype(np.float64, copy=False))

    return MDData(
        positions=cat(positions),
        forces=cat(forces),
        energies=cat(energies),
        temperature=float(temperature),
        sources=sources,
        atom_names=atom_names,
        elements=elements,
    )


def _check_finite(arr: Optional[np.ndarray], key: str, path: Path, stride: int) -> None:
    """ValueError naming the file and the first frame (index in the file) with a NaN/inf in ``key``."""
    if arr is None:
        return
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        frames = np.flatnonzero(bad) * stride
        raise ValueError(f"{path}: {key} contain non-finite values in {len(frames)} frame(s), the first "
                         f"at frame {frames[0]} (index in the file)")


# Bonded neighbours are ~0.1-0.15 nm apart (~1-1.5 Angstrom); in nm every atom's nearest neighbour
# is closer than this (bound on the median over atoms).
_NEAREST_NEIGHBOUR_MAX_NM = 0.5


def _check_nanometres(pos: np.ndarray, path: Path) -> None:
    """ValueError when the positions look like Angstrom (median nearest-neighbour distance of the
    first frame above 0.5 nm)."""
    x = np.asarray(pos[0], dtype=np.float64)
    if len(x) < 2:
        return
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = float(np.median(d.min(axis=1)))
    if nearest > _NEAREST_NEIGHBOUR_MAX_NM:
        raise ValueError(f"{path}: positions look like Angstrom (median nearest-neighbour distance "
                         f"{nearest:.3g}; bonded atoms are ~0.1 nm apart): positions must be in nm "
                         "(divide by 10)")


def check_split(n_frames: int, train_idx: np.ndarray, val_idx: np.ndarray, batch_size: int,
                min_frames: int = 10) -> None:
    """ValueError when the data are too few to train: fewer than ``min_frames`` frames, no
    validation frame, or fewer training frames than one batch."""
    if n_frames < min_frames:
        raise ValueError(f"too few frames: {n_frames} (at least {min_frames}: a validation block and a "
                         "training batch); give more or longer data files, or a smaller --stride")
    if len(val_idx) == 0:
        raise ValueError(f"no validation frames from {n_frames} frames: raise --val-fraction")
    if len(train_idx) < batch_size:
        raise ValueError(f"{len(train_idx)} training frames, fewer than one batch ({batch_size}, "
                         "--batch-size): give more data or a smaller batch")


def _optional(npz, key: str, shape, stride: int, path: Path) -> Optional[np.ndarray]:
    if key not in npz.files:
        return None
    arr = np.asarray(npz[key])[::stride]
    if arr.shape != tuple(shape):
        raise ValueError(f"{path}: '{key}' has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def split_blocks(
    n_frames: int, val_fraction: float = 0.1, n_blocks: int = 10
) -> Tuple[np.ndarray, np.ndarray]:
    """Train/validation frame indices by contiguous blocks, not random frames.

    The frames are cut into ``n_blocks`` contiguous blocks of (nearly) equal length; the last
    ``val_fraction`` of each block goes to validation, so that validation covers the whole trajectory
    in ``n_blocks`` contiguous segments (each far longer than the correlation time for the default
    data). Returns sorted int64 ``(train_idx, val_idx)``, disjoint, together ``arange(n_frames)``;
    ``round(val_fraction * n_frames)`` validation frames in all.
    """
    n_frames = int(n_frames)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    if int(n_blocks) != n_blocks or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive integer, got {n_blocks}")
    n_blocks = max(1, min(int(n_blocks), n_frames))
    n_val = int(round(val_fraction * n_frames))
    blocks = np.array_split(np.arange(n_frames, dtype=np.int64), n_blocks)
    # Larger validation shares go with the larger blocks (array_split puts both first).
    val_sizes = [len(s) for s in np.array_split(np.arange(n_val), n_blocks)]
    train, val = [], []
    for block, k in zip(blocks, val_sizes):
        cut = len(block) - k
        train.append(block[:cut])
        val.append(block[cut:])
    empty = np.zeros(0, dtype=np.int64)
    return np.concatenate(train) if train else empty, np.concatenate(val) if val else empty
