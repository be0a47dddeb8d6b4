"""Ramp functions and the generalized sigmoid ``sigma[rho]`` of Eq. 6, computed in the log domain.

Two ramps (paper section 4):

* C-infinity exponential ramp ``rho(x) = exp(-1 / (alpha x^beta))`` for ``x > 0``, else 0; ``alpha > 0``
  is a tensor (trainable, broadcast against ``x``), ``beta`` a positive integer hyper-parameter (1 or 2).
* C^k monomial ramp ``rho(x) = x^k`` (``order`` = k), the sigmoid is then only C^(k-1) at 0 and 1.

The generalized sigmoid ``sigma(t) = rho(t) / (rho(t) + rho(1-t))`` equals ``sigmoid(s(t))`` with the
logit ``s(t) = log rho(t) - log rho(1-t)``:

* exp ramp:      ``s = 1/(alpha (1-t)^beta) - 1/(alpha t^beta)``,
                 ``s' = beta (1/(alpha t^(beta+1)) + 1/(alpha (1-t)^(beta+1)))``
* monomial ramp: ``s = k (log t - log(1-t))``, ``s' = k / (t (1-t))``

and ``log sigma'(t) = logsigmoid(s) + logsigmoid(-s) + log s' = 2 logsigmoid(s) - s + log s'``.

The internal functions take the centred argument ``z = t - 1/2`` and two per-parameter constants
(``unsaturated_halfwidth`` and ``1/alpha``) that a transform computes once per set of params.

Safe-where pattern: where ``sigma`` is saturated (outside (0, 1), or so close to its edges that
``|s| >= sat``, which makes ``sigma`` equal to 0 or 1 to far below the dtype's precision) ``t`` is
replaced by 1/2 *before* any singular op and the result is then replaced by the exact constant (0 or 1,
zero derivative) with ``torch.where``. All values, first and second autograd derivatives stay finite
in float32 and float64 at ``t`` in {0, 1}, at the edges and for extreme ``alpha``. ``sat`` is 100 in
float64 (jump at the cut ~ e^-100, invisible) and 30 in float32 (keeps ``1/t^3`` finite).

Everything here is TorchScript-able and broadcasts elementwise.
"""

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_ZERO = -1.0e4  # finite stand-in for log 0 = log sigma' outside the support (exp(-1e4) == 0)


def saturation(dtype: torch.dtype) -> float:
    """Logit magnitude beyond which the sigmoid counts as exactly 0 or 1 (100 in float64, else 30)."""
    return 100.0 if dtype == torch.float64 else 30.0


def exp_ramp(x: Tensor, alpha: Tensor, beta: int = 2) -> Tensor:
    """``rho(x) = exp(-1/(alpha x^beta))`` for ``x > 0`` and 0 otherwise (safe where; broadcasts)."""
    pos = x > 0
    xs = torch.where(pos, x, torch.ones_like(x))
    return torch.where(pos, torch.exp(-1.0 / (alpha * xs.pow(beta))), torch.zeros_like(xs))


def monomial_ramp(x: Tensor, order: int) -> Tensor:
    """``rho(x) = x^k`` for ``x > 0`` and 0 otherwise (``k = order``)."""
    return torch.where(x > 0, x, torch.zeros_like(x)).pow(order)


def unsaturated_halfwidth(alpha: Tensor, use_exp: bool, beta: int, order: int, sat: float) -> Tensor:
    """``h = 1/2 - t_eps``: the sigmoid is computed for ``|t - 1/2| < h`` and is exactly 0 / 1 beyond.

    Exp ramp: for ``t <= t_eps = (alpha sat + 2^beta)^(-1/beta)`` one has ``s <= -sat`` (and
    symmetrically at ``1 - t``). Monomial ramp: ``t_eps = exp(-sat / k)`` (there ``sigma ~ t^k <= e^-sat``).
    Depends on the parameters only, so a transform computes it once per set of params.
    """
    if use_exp:
        if beta == 2:
            t_eps = torch.rsqrt(alpha * sat + 4.0)
        elif beta == 1:
            t_eps = 1.0 / (alpha * sat + 2.0)
        else:
            t_eps = (alpha * sat + 2.0 ** beta).pow(-1.0 / beta)
        return 0.5 - t_eps
    return torch.full_like(alpha, 0.5 - math.exp(-sat / order))


def sigmoid_parts(z: Tensor, half: Tensor, inv_alpha: Tensor, use_exp: bool, beta: int, order: int,
                  with_ds: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """At ``t = 1/2 + z`` returns ``(mask, s, ds)``: ``mask = |z| < half`` marks unsaturated points, ``s``
    the logit and ``ds = s'(t)``, both evaluated at the harmless t = 1/2 where ``mask`` is False
    (``ds`` is ``s`` if not ``with_ds``). ``inv_alpha = 1 / alpha`` (ignored by the monomial ramp)."""
    mask = z.abs() < half
    zs = torch.where(mask, z, 0.0)
    tt = 0.5 + zs
    u = 0.5 - zs
    if use_exp:
        if beta == 2:
            lo = inv_alpha / (tt * tt)
            hi = inv_alpha / (u * u)
        elif beta == 1:
            lo = inv_alpha / tt
            hi = inv_alpha / u
        else:
            lo = inv_alpha / tt.pow(beta)
            hi = inv_alpha / u.pow(beta)
        s = hi - lo
        ds = beta * (lo / tt + hi / u) if with_ds else s
    else:
        s = order * (torch.log(tt) - torch.log(u))
        ds = order / (tt * u) if with_ds else s
    return mask, s, ds


def _step(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)


def sigmoid_value(z: Tensor, half: Tensor, inv_alpha: Tensor, use_exp: bool, beta: int, order: int) -> Tensor:
    """``sigma[rho](1/2 + z)`` only (exactly 0 left of the support, 1 right of it)."""
    mask, s, _ = sigmoid_parts(z, half, inv_alpha, use_exp, beta, order, False)
    return torch.where(mask, torch.sigmoid(s), _step(z))


def sigmoid_and_derivative(z: Tensor, half: Tensor, inv_alpha: Tensor, use_exp: bool, beta: int,
                           order: int) -> Tuple[Tensor, Tensor]:
    """``(sigma(t), sigma'(t))`` at ``t = 1/2 + z``, ``sigma' = sigmoid(s) sigmoid(-s) s'`` (0 where saturated)."""
    mask, s, ds = sigmoid_parts(z, half, inv_alpha, use_exp, beta, order, True)
    sig = torch.sigmoid(s)
    value = torch.where(mask, sig, _step(z))
    deriv = torch.where(mask, sig * torch.sigmoid(-s) * ds, 0.0)
    return value, deriv


def sigmoid_and_logderivative(z: Tensor, half: Tensor, inv_alpha: Tensor, use_exp: bool, beta: int,
                              order: int) -> Tuple[Tensor, Tensor]:
    """``(sigma(t), log sigma'(t))`` at ``t = 1/2 + z``; ``log sigma' = 2 logsigmoid(s) - s + log s'`` where
    unsaturated, ``LOG_ZERO`` beyond (finite everywhere)."""
    mask, s, ds = sigmoid_parts(z, half, inv_alpha, use_exp, beta, order, True)
    value = torch.where(mask, torch.sigmoid(s), _step(z))
    logd = torch.where(mask, 2.0 * F.logsigmoid(s) - s + torch.log(ds), LOG_ZERO)
    return value, logd


def generalized_sigmoid(t: Tensor, alpha: Tensor, ramp: str = "exp", beta: int = 2,
                        order: int = 2) -> Tuple[Tensor, Tensor]:
    """Public convenience wrapper: ``(sigma[rho](t), log sigma[rho]'(t))`` for ``ramp`` in
    {"exp", "monomial"}; ``alpha`` broadcasts against ``t`` (ignored by the monomial ramp)."""
    if ramp not in ("exp", "monomial"):
        raise ValueError(f"unknown ramp {ramp!r}")
    use_exp = ramp == "exp"
    half = unsaturated_halfwidth(alpha, use_exp, beta, order, saturation(t.dtype))
    return sigmoid_and_logderivative(t - 0.5, half, 1.0 / alpha, use_exp, beta, order)
