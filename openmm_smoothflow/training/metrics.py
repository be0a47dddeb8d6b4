"""Accuracy metrics shared by validation during training and ``smoothflow evaluate``.

All energies in kT, forces in kT/nm. Data metrics: NLL, mean squared force residual (summed over atoms
and components, the FM loss) and force RMSE per component. Sample metrics (flow samples scored by the
target energy): reverse KL estimate E_q[u + log q] (up to the log partition function) and the Kish
effective sample size divided by the number of samples.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor


def kish_ess_fraction(log_weights: Tensor) -> float:
    """Kish effective sample size / N of importance weights given by their logs (B,)."""
    log_weights = log_weights[torch.isfinite(log_weights)]
    if log_weights.numel() == 0:
        return 0.0
    w = torch.exp(log_weights - log_weights.max())
    return float(w.sum() ** 2 / (w**2).sum() / log_weights.numel())


def data_metrics(generator, positions: Tensor, forces_kt: Optional[Tensor], chunk: int = 512) -> Dict[str, float]:
    """NLL (kT), FM residual ((kT/nm)^2 per frame) and force RMSE (kT/nm per component) on frames."""
    from .losses import force_matching_terms

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
        residual = torch.cat(residuals)
        out["val_fm"] = float(residual.mean())
        out["val_force_rmse"] = float(residual.sum() / (len(residual) * positions[0].numel())) ** 0.5
    return out


def sample_metrics(generator, target, n_samples: int) -> Dict[str, float]:
    """Reverse KL estimate (kT) and Kish ESS / N of ``n_samples`` flow samples under ``target``.

    ``target(x)`` gives the target energy (B,) in kT for positions (B, N, 3) nm.
    """
    with torch.no_grad():
        x, log_q = generator.sample(n_samples)
        u = target(x.to(torch.float64)).to(log_q.dtype)
    finite = torch.isfinite(u) & torch.isfinite(log_q)
    log_w = -(u + log_q)
    return {"val_kl": float((u + log_q)[finite].mean()) if finite.any() else float("inf"),
            "val_ess": kish_ess_fraction(log_w), "val_nonfinite_samples": int((~finite).sum())}


def validation_metrics(generator, positions: Tensor, forces_kt: Optional[Tensor], target=None,
                       n_samples: int = 0) -> Dict[str, float]:
    metrics = data_metrics(generator, positions, forces_kt)
    if target is not None and n_samples > 0:
        metrics.update(sample_metrics(generator, target, n_samples))
    return metrics
