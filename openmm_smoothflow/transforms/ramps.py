"""Ramp functions and the generalized sigmoid ``sigma[rho]`` of Eq. 6, computed through its logit.

Two ramps (paper section 4):

* C-infinity exponential ramp ``rho(x) = exp(-1 / (alpha x^beta))`` for ``x > 0``, else 0; ``alpha > 0``
  is a tensor (trainable, broadcast against ``x``), ``beta`` a positive integer hyper-parameter (1 or 2).
* C^k monomial ramp ``rho(x) = x^k`` (``order`` = k), the sigmoid is then only C^(k-1) at 0 and 1.

The generalized sigmoid ``sigma(t) = rho(t) / (rho(t) + rho(1-t))`` equals ``sigmoid(s(t))`` with the
logit ``s(t) = log rho(t) - log rho(1-t)``. With ``u = 1 - t``, ``z = t - 1/2`` and ``q = t u = 1/4 - z^2``:

* exp ramp:      ``s = 1/(alpha u^beta) - 1/(alpha t^beta)``, ``s' = beta (1/(alpha t^(beta+1)) + 1/(alpha u^(beta+1)))``;
                 beta = 2: ``s = k z / q^2``, ``s' = (k / q^2) (1/q - 3)``; beta = 1: ``s = k z / q``,
                 ``s' = (k / q) (1/(2q) - 1)``, where ``k = 2 / alpha``
* monomial ramp: ``s = order (log t - log u)``, ``s' = order / q``

and ``log sigma'(t) = logsigmoid(s) + logsigmoid(-s) + log s' = 2 logsigmoid(s) - s + log s'``.

``logit`` takes the centred argument ``z = t - 1/2`` and ``k = 2 / alpha`` (a transform computes it
once per set of params) and returns ``s`` and its first two derivatives; ``transforms/bump.py`` builds
the bump CDFs ``sigma = sigmoid(s)``, ``sigma' = sigmoid(s) sigmoid(-s) s'`` and their derivatives on it.

Clamp pattern (never NaN or inf): ``z`` is clamped to ``|z| <= 1/2 - margin`` before any singular op
(``clamp_margin``: 1e-12 in float64, 1e-6 in float32). At the margin ``|s| >= 1/(alpha margin^beta)``,
so sigma is 0 or 1 to far below the dtype's precision (exp ramp, beta = 2: for every alpha below 1e22
in float64, 3e10 in float32; beta = 1: below 1e10 and 3e4; monomial ramp: the margin is
``exp(-sat/order)``, ``sigma <= e^-sat``); beyond it (outside the support included) the clamp makes
every derivative with respect to ``t`` exactly 0. Values,
first and second autograd derivatives stay finite in float32 and float64 for every ``t``.

Everything here is TorchScript-able and broadcasts elementwise.
"""

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_ZERO = -1.0e4  # finite stand-in for log 0 = log sigma' where sigma is saturated (exp(-1e4) == 0)


def saturation(dtype: torch.dtype) -> float:
    """Logit magnitude beyond which the sigmoid counts as exactly 0 or 1 (100 in float64, else 30)."""
    return 100.0 if dtype == torch.float64 else 30.0


def clamp_margin(dtype: torch.dtype, use_exp: bool, order: int) -> float:
    """``|t - 1/2|`` is clamped to ``1/2 - margin`` (see the module docstring)."""
    margin = 1e-12 if dtype == torch.float64 else 1e-6
    if use_exp:
        return margin
    return max(margin, math.exp(-saturation(dtype) / order))


def exp_ramp(x: Tensor, alpha: Tensor, beta: int = 2) -> Tensor:
    """``rho(x) = exp(-1/(alpha x^beta))`` for ``x > 0`` and 0 otherwise (safe where; broadcasts)."""
    pos = x > 0
    xs = torch.where(pos, x, torch.ones_like(x))
    return torch.where(pos, torch.exp(-1.0 / (alpha * xs.pow(beta))), torch.zeros_like(xs))


def monomial_ramp(x: Tensor, order: int) -> Tensor:
    """``rho(x) = x^k`` for ``x > 0`` and 0 otherwise (``k = order``)."""
    return torch.where(x > 0, x, torch.zeros_like(x)).pow(order)


def logit(z: Tensor, k: Tensor, use_exp: bool, beta: int, order: int, margin: float,
          n_derivatives: int) -> List[Tensor]:
    """``[s, s', s'']`` (the first ``n_derivatives + 1``; derivatives w.r.t. ``t``) at ``t = 1/2 + z``,
    ``z`` clamped as in the module docstring. ``k = 2 / alpha`` (ignored by the monomial ramp); the exp
    ramp's ``s`` and its derivatives are proportional to ``k``. Second derivatives: beta = 2:
    ``s'' = 6 s (1/q) (1/q - 2)``; beta = 1: ``s'' = 2 s (1/q) (1/q - 1)``; monomial: ``s'' = 2 k z / q^2``."""
    zc = z.clamp(margin - 0.5, 0.5 - margin)
    if use_exp and beta <= 2:
        q = torch.rsub(zc * zc, 0.25)  # 1/4 - z^2
        iq = torch.reciprocal(q)
        r = k * (iq * iq) if beta == 2 else k * iq
        s = r * zc
        if n_derivatives == 0:
            return [s]
        ds = r * (iq - 3.0) if beta == 2 else r * (0.5 * iq - 1.0)
        if n_derivatives == 1:
            return [s, ds]
        return [s, ds, (6.0 * s) * (iq * (iq - 2.0)) if beta == 2 else (2.0 * s) * (iq * (iq - 1.0))]
    t = 0.5 + zc
    u = 0.5 - zc
    if use_exp:  # general beta
        lo = (0.5 * k) / t.pow(beta)
        hi = (0.5 * k) / u.pow(beta)
        s = hi - lo
        derivs = [s, beta * (lo / t + hi / u), (beta * (beta + 1)) * (hi / (u * u) - lo / (t * t))]
    else:
        s = order * (torch.log(t) - torch.log(u))
        iq = torch.reciprocal(t * u)
        derivs = [s, order * iq, (2.0 * order) * zc * (iq * iq)]
    return derivs[:n_derivatives + 1]


def generalized_sigmoid(t: Tensor, alpha: Tensor, ramp: str = "exp", beta: int = 2,
                        order: int = 2) -> Tuple[Tensor, Tensor]:
    """Public convenience wrapper: ``(sigma[rho](t), log sigma[rho]'(t))`` for ``ramp`` in
    {"exp", "monomial"}; ``alpha`` broadcasts against ``t`` (ignored by the monomial ramp).
    ``log sigma' = 2 logsigmoid(s) - s + log s'`` where ``|s| < sat`` (``saturation``), ``LOG_ZERO`` beyond."""
    if ramp not in ("exp", "monomial"):
        raise ValueError(f"unknown ramp {ramp!r}")
    use_exp = ramp == "exp"
    s, ds = logit(t - 0.5, 2.0 / alpha, use_exp, beta, order, clamp_margin(t.dtype, use_exp, order), 1)
    logd = torch.where(s.abs() < saturation(t.dtype), 2.0 * F.logsigmoid(s) - s + torch.log(ds), LOG_ZERO)
    return torch.sigmoid(s), logd
