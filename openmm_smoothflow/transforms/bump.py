"""Mixtures of smooth unimodal bump transforms on [0, 1] (Eq. 7) and on the circle (SI-1.2).

Component i (of K): ``g_i(x) = sigma[rho](a_i (x - b_i) + 1/2)`` (``ramps.py``) increases from 0 to 1
on its support ``[b_i - 1/(2 a_i), b_i + 1/(2 a_i)]`` and is constant (all derivatives 0) outside.

* interval: ``f_i(x) = (1 - c_i) (g_i(x) - g_i(0)) / (g_i(1) - g_i(0)) + c_i x``   (Eq. 7)
* circle:   ``f_i(x) = (1 - c_i) (G_i(x) - G_i(0)) + c_i x`` with the lifted wrapped CDF
  ``G_i(x) = g_i(x - n_i(x)) + n_i(x)``, ``n_i(x) = round(x - b_i)``. Because ``a_i >= 1`` the support is
  at most 1 wide, so this equals the closed form ``sum_{k in {-1,0,1}} (g_i(x+k) - g_i(k))`` of the
  wrapped bump density on [0, 1]; it is smooth for every real x and ``f(x + 1) = f(x) + 1`` exactly,
  so all derivatives are periodic.

The transform is the convex mixture ``f = sum_i w_i f_i``. Since ``f' = sum_i w_i (1 - c_i) g_i' /
(g_i(1) - g_i(0)) + sum_i w_i c_i >= c_min > 0``, ``f'`` is summed in linear space (no logsumexp
needed, fewer ops) and ``log f' = log(f')`` is finite everywhere; ``g_i(1) - g_i(0) >= 1/2`` on the
interval (at least half of a bump centred in [0, 1] lies inside).

Parametrisation: raw params (B, D, 5 K), read as (B, D, 5, K) = [a | b | c | alpha | w] blocks of K:

* ``a_i = 1 + exp(min(raw, 9))``                                     (>= 1: support at most 1 wide; the
  exponential reaches the sharp peaks of stiff bonds, a ~ 100, in a few optimiser steps)
* ``b_i = sigmoid(raw + logit((i + 1/2) / K))``                      (params == 0 spreads the K bumps)
* ``c_i = c_min + (1 - c_min) sigmoid(raw + c_offset)``              (in (c_min, 1]; floor keeps f' > 0;
  ``c_offset = 3`` gives ``1 - c ~ 0.047`` at params == 0: close to the identity)
* ``alpha_i = softplus(raw) + alpha_min``                            (exp ramp only; the monomial ramp
  ignores this block, the layout stays the same)
* ``w = softmax(raw)``                                               (uniform at params == 0)

``x`` is expected in [0, 1]; values slightly outside are fine (the formula is a smooth function on all
of R: constant bumps plus the linear part ``c x``), and exact on the circle.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ElementwiseTransform
from .ramps import saturation, sigmoid_and_derivative, sigmoid_value, unsaturated_halfwidth
from .spline import _softmax


class BumpMixture(ElementwiseTransform):
    """Convex mixture of ``n_components`` smooth bump CDFs; ``n_params = 5 * n_components``.

    ``ramp``: "exp" (C-infinity, ``rho(x) = exp(-1/(alpha x^beta))``, ``beta`` in {1, 2}) or
    "monomial" (C^(order-1) with ``rho(x) = x^order``; ``order`` required). ``c_min``: floor of the
    linear weight ``c`` (and of ``f'``); ``alpha_min``: floor of the ramp parameter alpha.
    Forward: ``x`` (B, D), ``params`` (B, D, 5 K) -> ``(f(x), log f'(x))`` both (B, D).
    Inverse: multi-bin bisection with implicit gradients (base class).
    """

    n_components: int
    use_exp: bool
    beta: int
    order: int
    c_min: float
    alpha_min: float
    c_offset: float

    def __init__(self, n_components: int = 8, circular: bool = False, ramp: str = "exp", beta: int = 2,
                 order: Optional[int] = None, c_min: float = 1e-3, alpha_min: float = 1e-2,
                 c_offset: float = 3.0) -> None:
        super().__init__(5 * n_components, circular)
        if ramp not in ("exp", "monomial"):
            raise ValueError(f"ramp must be 'exp' or 'monomial', got {ramp!r}")
        if ramp == "monomial" and (order is None or order < 1):
            raise ValueError("ramp='monomial' needs an integer order >= 1")
        if beta < 1:
            raise ValueError("beta must be a positive integer")
        if not 0.0 < c_min < 1.0:
            raise ValueError("c_min must lie in (0, 1)")
        self.n_components = n_components
        self.ramp = ramp
        self.use_exp = ramp == "exp"
        self.beta = int(beta)
        self.order = int(order) if order is not None else 0
        self.c_min = float(c_min)
        self.alpha_min = float(alpha_min)
        self.c_offset = float(c_offset)
        centres = [(i + 0.5) / n_components for i in range(n_components)]
        self.register_buffer("b_offset", torch.tensor([math.log(p / (1 - p)) for p in centres]),
                             persistent=False)

    def extra_repr(self) -> str:
        return (f"n_components={self.n_components}, circular={self.circular}, ramp={self.ramp!r}, "
                f"beta={self.beta}, order={self.order}, c_min={self.c_min}")

    def constrained(self, params: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, c, alpha, w)``, each (B, D, K), from raw params (B, D, 5 K)."""
        p = params.reshape(list(params.shape[:-1]) + [5, self.n_components])
        a = 1.0 + torch.exp(p[..., 0, :].clamp(max=9.0))  # a <= 1 + e^9: supports no narrower than ~1e-4
        b = torch.sigmoid(p[..., 1, :] + self.b_offset.to(params.dtype))
        c = self.c_min + (1.0 - self.c_min) * torch.sigmoid(p[..., 2, :] + self.c_offset)
        alpha = F.softplus(p[..., 3, :]) + self.alpha_min
        w = _softmax(p[..., 4, :])
        return a, b, c, alpha, w

    def _prepare(self, params: Tensor) -> List[Tensor]:
        """-> [a, b, 1/alpha, half, u, off, cbar]: the first five (B, D, 1, K), off and cbar (B, D, 1) with
        ``f(x) = sum_i u_i G_i(x) - off + cbar x``, ``u_i = w_i (1 - c_i) / (g_i(1) - g_i(0))`` (interval)
        or ``w_i (1 - c_i)`` (circle), ``half`` the ramp's unsaturated half-width (``ramps.py``)."""
        p = params.reshape(list(params.shape[:-1]) + [5, self.n_components]).unsqueeze(-2)
        a = 1.0 + torch.exp(p[..., 0, :, :].clamp(max=9.0))  # a <= 1 + e^9: supports no narrower than ~1e-4
        b = torch.sigmoid(p[..., 1, :, :] + self.b_offset.to(params.dtype))
        one_minus_c = (1.0 - self.c_min) * torch.sigmoid(-(p[..., 2, :, :] + self.c_offset))
        alpha = F.softplus(p[..., 3, :, :]) + self.alpha_min
        w = _softmax(p[..., 4, :, :])
        inv_alpha = 1.0 / alpha
        half = unsaturated_halfwidth(alpha, self.use_exp, self.beta, self.order, saturation(params.dtype))
        cbar = 1.0 - (w * one_minus_c).sum(-1)  # sum_i w_i c_i, (B, D, 1)
        if self.circular:
            n0 = torch.round(-b)
            g0 = sigmoid_value(a * (-b - n0), half, inv_alpha, self.use_exp, self.beta, self.order) + n0
            u = w * one_minus_c
        else:  # g(0) and g(1) in one call: points on axis -2
            ends = torch.tensor([[0.0], [1.0]], dtype=params.dtype, device=params.device)
            g01 = sigmoid_value(a * (ends - b), half, inv_alpha, self.use_exp, self.beta, self.order)
            g0 = g01[..., :1, :]
            u = w * one_minus_c / (g01[..., 1:, :] - g0)
        off = (u * g0).sum(-1)
        return [a, b, inv_alpha, half, u, off, cbar]

    def _evaluate(self, x: Tensor, prep: List[Tensor], with_logdet: bool) -> Tuple[Tensor, Tensor]:
        """``x`` (B, D, M) -> ``(f(x), log f'(x))`` (B, D, M); components broadcast on a trailing axis."""
        a, b, inv_alpha, half, u, off, cbar = prep[0], prep[1], prep[2], prep[3], prep[4], prep[5], prep[6]
        d = x.unsqueeze(-1) - b  # (B, D, M, K)
        n = d  # placeholder (TorchScript needs it bound); the winding number on the circle
        if self.circular:
            n = torch.round(d)
            d = d - n
        z = a * d  # t - 1/2
        if with_logdet:
            g, dg = sigmoid_and_derivative(z, half, inv_alpha, self.use_exp, self.beta, self.order)
        else:
            g = sigmoid_value(z, half, inv_alpha, self.use_exp, self.beta, self.order)
            dg = g
        if self.circular:
            g = g + n
        y = (u * g).sum(-1) - off + cbar * x
        if not with_logdet:
            return y, y
        deriv = (u * a * dg).sum(-1) + cbar
        return y, torch.log(deriv)
