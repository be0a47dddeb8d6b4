"""Equilibrium data for DW4 / LJ13 by Metropolis Monte Carlo on the exact reduced energy.

Many independent chains run side by side (vectorised torch, float64, one thread is plenty). Each chain
adapts its Gaussian step size during burn-in (target acceptance 0.4) and then keeps it fixed, so the
production run is a proper Metropolis chain. A pilot stretch measures the integrated autocorrelation
time tau of the energy; production then stores one configuration every ``ceil(2 tau)`` steps
(effectively independent samples). Equilibrium checks written to the summary: tau, acceptance, the
energy histograms of the first and second half of production (and their mean difference in units of
its standard error), and the number of decorrelated samples.

Splits follow the papers: 1,000 test and 1,000 validation configurations, the rest training; a
training set of size n is the first n training configurations (the sets are nested). Positions are
reduced units, centre of mass removed, shape (n, M, dim).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..io import atomic_write
from ..units import PathLike
from .systems import ParticleSystem, get_system, remove_mean

N_TEST = 1000
N_VAL = 1000
# The papers' training-set sizes (Satorras et al. Table 1).
TRAIN_SIZES = {"dw4": (100, 1000, 10000, 100000), "lj13": (10, 100, 1000, 10000)}


def initial_positions(system: ParticleSystem, n_chains: int, generator: torch.Generator) -> torch.Tensor:
    """Start configurations (C, M, dim): DW4 Gaussian blobs; LJ13 a jittered 3x3x3 grid (no overlaps)."""
    if system.name == "dw4":
        x = 2.5 * torch.randn(n_chains, system.n_particles, system.dim, generator=generator, dtype=torch.float64)
    else:
        grid = torch.stack(torch.meshgrid(*[torch.arange(3.0, dtype=torch.float64)] * 3, indexing="ij"), -1)
        grid = 1.1 * grid.reshape(-1, 3)[: system.n_particles]
        x = grid + 0.05 * torch.randn(n_chains, system.n_particles, 3, generator=generator, dtype=torch.float64)
    return remove_mean(x)


def autocorrelation_time(series: np.ndarray, window: float = 5.0) -> float:
    """Integrated autocorrelation time (in steps) of ``series`` (T, C), averaged over chains (Sokal window)."""
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean(0)
    T = x.shape[0]
    f = np.fft.rfft(x, n=2 * T, axis=0)
    acf = np.fft.irfft(f * np.conj(f), axis=0)[:T].mean(1)
    if acf[0] <= 0:
        return 1.0
    acf = acf / acf[0]
    tau = 1.0
    for m in range(1, T):
        tau = 1.0 + 2.0 * acf[1: m + 1].sum()
        if m >= window * tau:
            break
    return float(max(tau, 1.0))


class Metropolis:
    """Vectorised random-walk Metropolis on ``system.energy`` (reduced, kT = 1) for C chains."""

    def __init__(self, system: ParticleSystem, n_chains: int, seed: int = 0):
        self.system = system
        self.gen = torch.Generator().manual_seed(seed)
        self.x = initial_positions(system, n_chains, self.gen)
        self.u = system.energy(self.x)
        self.step_size = torch.full((n_chains,), 0.1, dtype=torch.float64)
        self.accepted = torch.zeros(n_chains, dtype=torch.float64)
        self.steps = 0

    def step(self, adapt: bool = False) -> None:
        noise = torch.randn(self.x.shape, generator=self.gen, dtype=torch.float64)
        proposal = remove_mean(self.x + self.step_size[:, None, None] * noise)
        u_new = self.system.energy(proposal)
        log_r = torch.rand(self.u.shape, generator=self.gen, dtype=torch.float64).log()
        accept = (log_r < self.u - u_new) & torch.isfinite(u_new)
        self.x = torch.where(accept[:, None, None], proposal, self.x)
        self.u = torch.where(accept, u_new, self.u)
        if adapt:
            self.step_size = self.step_size * torch.exp(0.05 * (accept.double() - 0.4))
        else:
            self.accepted += accept.double()
            self.steps += 1

    @property
    def acceptance(self) -> float:
        return float(self.accepted.mean() / max(self.steps, 1))


def generate(system_name: str, n_samples: int, n_chains: int = 1000, burn_in: int = 5000, pilot: int = 2000,
             seed: int = 0, progress: bool = True) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Run the chains; returns (positions (n_samples, M, dim) reduced, shuffled; summary dict)."""
    system = get_system(system_name)
    t0 = time.time()
    mc = Metropolis(system, n_chains, seed)
    for k in range(burn_in):
        mc.step(adapt=True)
        if progress and (k + 1) % 1000 == 0:
            print(f"[{system.name}] burn-in {k + 1}/{burn_in}  <u> = {float(mc.u.mean()):.3f}", flush=True)
    pilot_u = np.empty((pilot, n_chains))
    for k in range(pilot):
        mc.step()
        pilot_u[k] = mc.u.numpy()
    tau = autocorrelation_time(pilot_u)
    thin = max(1, math.ceil(2.0 * tau))
    per_chain = math.ceil(n_samples / n_chains)
    samples, energies = [], []
    for k in range(per_chain * thin):
        mc.step()
        if (k + 1) % thin == 0:
            samples.append(mc.x.clone())
            energies.append(mc.u.clone())
            if progress and len(samples) % max(1, per_chain // 10) == 0:
                print(f"[{system.name}] production {len(samples)}/{per_chain} per chain (thin {thin})", flush=True)
    x = torch.stack(samples).numpy()  # (S, C, M, d) in time order
    u = torch.stack(energies).numpy()  # (S, C)
    half = x.shape[0] // 2
    first, second = u[:half].ravel(), u[half:].ravel()
    if half == 0:
        first = second = u.ravel()
    bins = np.linspace(u.min(), np.quantile(u, 0.999), 41)
    stderr = math.sqrt(first.var() / max(len(first), 1) + second.var() / max(len(second), 1))
    summary = {
        "system": system.name, "n_chains": n_chains, "burn_in": burn_in, "pilot": pilot, "seed": seed,
        "tau_energy_steps": tau, "thin_steps": thin, "acceptance": mc.acceptance,
        "mean_step_size": float(mc.step_size.mean()), "n_decorrelated": int(u.size),
        "energy_mean": float(u.mean()), "energy_std": float(u.std()),
        "energy_mean_first_half": float(first.mean()), "energy_mean_second_half": float(second.mean()),
        "halves_difference_in_stderr": float(abs(first.mean() - second.mean()) / max(stderr, 1e-300)),
        "histogram_bins": bins.tolist(),
        "histogram_first_half": np.histogram(first, bins, density=True)[0].tolist(),
        "histogram_second_half": np.histogram(second, bins, density=True)[0].tolist(),
        "seconds": time.time() - t0,
    }
    flat = x.reshape(-1, system.n_particles, system.dim)
    order = np.random.default_rng(seed).permutation(len(flat))[:n_samples]
    return flat[order], summary


def split(positions: np.ndarray) -> Dict[str, np.ndarray]:
    """The papers' split: test = first 1,000, validation = next 1,000, training = the rest."""
    if len(positions) <= N_TEST + N_VAL:
        raise ValueError(f"need more than {N_TEST + N_VAL} configurations, got {len(positions)}")
    return {"test": positions[:N_TEST], "val": positions[N_TEST: N_TEST + N_VAL], "train": positions[N_TEST + N_VAL:]}


def save_dataset(path: PathLike, system_name: str, positions: np.ndarray, summary: Dict[str, Any]) -> None:
    """Write the splits (float64, reduced units) and the summary JSON to one .npz, atomically."""
    parts = split(positions)
    with atomic_write(path, suffix=".npz") as tmp:
        np.savez(tmp, system=system_name, summary=json.dumps(summary), **parts)


def load_dataset(path: PathLike) -> Dict[str, Any]:
    """{'system', 'summary', 'train', 'val', 'test'} of a file written by :func:`save_dataset`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"particle dataset not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        out = {k: f[k] for k in ("train", "val", "test")}
        out["system"] = str(f["system"])
        out["summary"] = json.loads(str(f["summary"]))
    return out


def training_subset(data: Dict[str, Any], n: Optional[int]) -> np.ndarray:
    """The first ``n`` training configurations (all if None)."""
    train = data["train"]
    if n is not None and n > len(train):
        raise ValueError(f"asked for {n} training configurations, the dataset has {len(train)}")
    return train if n is None else train[:n]
