"""The losses of Eq. 5: L = w_n NLL + w_k KLD + w_f FM, with w_n = 1 - w_k - w_f.

``generator`` is a BoltzmannGenerator (or its DistributedDataParallel wrapper): calling it gives the
energy u(x) in kT. All in kT units: NLL and KLD in kT per configuration, FM in (kT/nm)^2: the squared
force residual averaged over the 3N components of a configuration (so FM = force RMSE^2).

Why the mean and not the squared norm of Eq. 4: the paper's Table 1 FME values (3.2e3 (kT/nm)^2 for
smooth flows trained with omega_f = 0.001) are per-component means (a force RMSE of 57 kT/nm, as
our runs reach; as sums over alanine dipeptide's 66 components they would mean 7 kT/nm, better than
the paper's own 1 us model). The weight at which force matching from a random start helps is still
lower here: omega_f = 1e-4 lowers the force error at unchanged NLL, 1e-3 stalls the NLL (README,
Table 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

CUTOFF_LOW_KT = 1e3   # SI-2.5: target energies (kT) above this grow logarithmically in the KL loss
CUTOFF_HIGH_KT = 1e9  # ... and are capped here


def energy_cutoff(u: Tensor, low: float = CUTOFF_LOW_KT, high: float = CUTOFF_HIGH_KT) -> Tensor:
    """The SI-2.5 cut-off: ``min(u, low + log(1 + u - low), high)``, elementwise.

    Identity below ``low``, logarithmic growth above (continuous with slope 1 at ``low``), capped at
    ``high``; NaN is treated as +inf (-> ``high``). Differentiable, gradient finite everywhere (0 at
    the cap and for inf/NaN inputs).
    """
    u = torch.as_tensor(u)
    if not torch.is_floating_point(u):
        u = u.to(torch.get_default_dtype())
    u = torch.where(torch.isnan(u), torch.full_like(u, math.inf), u)
    excess = torch.clamp(u - low, min=0.0)  # 0 below low: the log branch then has a finite gradient
    logged = low + torch.log1p(excess)
    out = torch.where(u <= low, u, logged)
    return torch.clamp(out, max=high)


@dataclass(frozen=True)
class LossWeights:
    """Eq. 5 weights; ``nll`` is what is left: 1 - kl - fm."""

    kl: float = 0.0
    fm: float = 0.0

    def __post_init__(self) -> None:
        if self.kl < 0 or self.fm < 0 or self.kl + self.fm > 1:
            raise ValueError(f"loss weights need kl, fm >= 0 and kl + fm <= 1 (got kl={self.kl}, fm={self.fm})")

    @property
    def nll(self) -> float:
        return 1.0 - self.kl - self.fm

    def combine(self, nll, fm=None, kl=None):
        """Eq. 5: the weighted sum of the terms whose weight is non-zero (tensors or floats)."""
        total = self.nll * nll
        if self.fm > 0:
            total = total + self.fm * fm
        if self.kl > 0:
            total = total + self.kl * kl
        return total


def nll_loss(generator, x: Tensor) -> Tensor:
    """Mean negative log-likelihood (kT) of positions x (B, N, 3) nm."""
    return generator(x).mean()


def force_matching_terms(generator, x: Tensor, forces_kt: Tensor, create_graph: bool = True):
    """(NLL (B,), mean squared force residual per component (B,), (kT/nm)^2) from one energy evaluation.

    ``forces_kt`` are reference forces in kT/nm (B, N, 3). ``create_graph`` keeps the graph of the
    flow force so the loss back-propagates to the parameters (second order). A ``generator`` with an
    ``energy_and_gradient(x) -> (u, grad_x u)`` method (:class:`~.compiled.CompiledFlow`: the
    hand-written reverse pass, compiled) gives both from it instead, differentiable once.
    """
    own_pass = getattr(generator, "energy_and_gradient", None)  # training.compiled.CompiledFlow
    if own_pass is not None:
        energy, grad = own_pass(x)
    else:
        x = x.detach().requires_grad_(True)
        energy = generator(x)
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
    residual = ((forces_kt + grad) ** 2).mean(dim=(1, 2))  # flow force = -grad
    return energy, residual


def reverse_kl_loss(generator, target: Callable[[Tensor], Tensor], n_samples: int) -> Tensor:
    """E_{x~q}[cutoff(u_target(x)) + log q(x)] in kT (up to the log partition function).

    ``target`` maps positions (B, N, 3) nm to energies (B,) in kT and is differentiable in x
    (e.g. ``OpenMMTarget`` for the classical force field).
    """
    x, log_q = getattr(generator, "module", generator).sample(n_samples)  # unwrap DDP
    return (energy_cutoff(target(x)) + log_q).mean()


def combined_loss(generator, x: Tensor, forces_kt: Optional[Tensor], weights: LossWeights,
                  target: Optional[Callable[[Tensor], Tensor]] = None, n_kl_samples: int = 0) -> Dict[str, Tensor]:
    """Eq. 5 on one batch; returns a dict with ``loss`` and the terms that entered it (kT units)."""
    out: Dict[str, Tensor] = {}
    if weights.fm > 0:
        if forces_kt is None:
            raise ValueError("force matching (fm weight > 0) needs reference forces in the data")
        energy, residual = force_matching_terms(generator, x, forces_kt)
        out["nll"], out["fm"] = energy.mean(), residual.mean()
    else:
        out["nll"] = nll_loss(generator, x)
    if weights.kl > 0:
        if target is None:
            raise ValueError("reverse KL (kl weight > 0) needs a target energy")
        out["kl"] = reverse_kl_loss(generator, target, n_kl_samples or x.shape[0])
    out["loss"] = weights.combine(out["nll"], out.get("fm"), out.get("kl"))
    return out
