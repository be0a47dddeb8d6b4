"""Accuracy metrics shared by validation during training and ``smoothflow evaluate``.

All energies in kT, forces in kT/nm. Data metrics: NLL, the FM loss (squared force residual per
component, (kT/nm)^2) and force RMSE per component. Sample metrics (flow samples scored by the target
energy): reverse KL estimate E_q[cutoff(u) + log q] (up to the log partition function; ``cutoff`` is
the SI-2.5 energy cut-off of the KL loss, so a few clashing samples with u = 1e6 kT do not swamp it),
the fraction of samples above the cut-off's linear range (u > 1e3 kT), and the Kish effective sample
size divided by the number of samples (raw target energies).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from .losses import CUTOFF_LOW_KT, energy_cutoff, force_matching_terms


def kish_ess_fraction(log_weights: Tensor) -> float:
    """Kish effective sample size / N of importance weights given by their logs (B,); a sample with a
    non-finite log weight (e.g. a NaN target energy) counts as weight 0."""
    n = log_weights.numel()
    log_weights = log_weights[torch.isfinite(log_weights)]
    if log_weights.numel() == 0:
        return 0.0
    w = torch.exp(log_weights - log_weights.max())
    return float(w.sum() ** 2 / (w**2).sum() / n)


def data_metrics(generator, positions: Tensor, forces_kt: Optional[Tensor], chunk: int = 512) -> Dict[str, float]:
    """NLL (kT), FM loss ((kT/nm)^2 per component) and force RMSE (kT/nm per component) on frames."""
    energies, residuals = [], []
    for start in range(0, len(positions), chunk):
        x = positions[start:start + chunk]
        if forces_kt is None:
            with torch.no_grad():
                energies.append(generator(x))
            continue
        with torch.enable_grad():
            u, residual = force_matching_terms(generator, x, forces_kt[start:start + chunk], create_graph=False)
        energies.append(u.detach())
        residuals.append(residual.detach())
    out = {"val_nll": float(torch.cat(energies).mean())}
    if forces_kt is not None:
        out["val_fm"] = float(torch.cat(residuals).mean())
        out["val_force_rmse"] = out["val_fm"] ** 0.5
    return out


def importance_metrics(u: Tensor, log_q: Tensor) -> Dict[str, float]:
    """Metrics of flow samples from their target energies ``u`` (B,) and flow log densities ``log_q``
    (B,), both in kT: reverse KL estimate E_q[cutoff(u) + log q] (kT, up to log Z; the SI-2.5 cut-off
    of the KL loss, NaN/inf target energies count as 1e9 kT), the fraction of samples above 1e3 kT,
    Kish ESS / N (raw energies), and how many samples have a non-finite u or log q."""
    finite = torch.isfinite(u) & torch.isfinite(log_q)
    ok_q = torch.isfinite(log_q)
    kl = energy_cutoff(u) + log_q
    return {"val_kl": float(kl[ok_q].mean()) if ok_q.any() else float("inf"),
            "val_clash_fraction": float((~(u <= CUTOFF_LOW_KT)).double().mean()),
            "val_ess": kish_ess_fraction(-(u + log_q)), "val_nonfinite_samples": int((~finite).sum())}


def sample_metrics(generator, target, n_samples: int) -> Dict[str, float]:
    """:func:`importance_metrics` of ``n_samples`` flow samples under ``target``.

    ``target(x)`` gives the target energy (B,) in kT for positions (B, N, 3) nm.
    """
    with torch.no_grad():  # exact samples of the flow's density (with rings: the restrained one)
        x, log_q, _ = generator.sample_restrained(n_samples)
        u = target(x.to(torch.float64)).to(log_q.dtype)
    return importance_metrics(u, log_q)


def validation_metrics(generator, positions: Tensor, forces_kt: Optional[Tensor], target=None,
                       n_samples: int = 0) -> Dict[str, float]:
    metrics = data_metrics(generator, positions, forces_kt)
    if target is not None and n_samples > 0:
        metrics.update(sample_metrics(generator, target, n_samples))
    return metrics
