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

Evaluation (few, batched tensor ops: at batch 1 every op's overhead counts): ``forward`` evaluates the K
bumps at ``x`` and at the end points (0 and 1 on the interval, 0 on the circle) in one call, so
``f(x) = sum_i u_i (G_i(x) - G_i(0)) + cbar x`` with ``u_i = w_i (1 - c_i) / (g_i(1) - g_i(0))``
(interval) or ``w_i (1 - c_i)`` (circle) and ``cbar = sum_i w_i c_i``. The root finder prepares the
same quantities once (``_prepare``) and evaluates many points per element (``_evaluate``).
``forward_cached(x, params, True)`` adds, from the same evaluation, the first derivatives of ``f`` and
``log f'`` w.r.t. ``x`` and the raw params by a reverse pass written out (``_jacobian``; for the
generator's analytic-gradient MD export); ``forward`` is that without them.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ElementwiseTransform
from .ramps import clamp_margin, logit
from .spline import _softmax


class BumpMixture(ElementwiseTransform):
    """Convex mixture of ``n_components`` smooth bump CDFs; ``n_params = 5 * n_components``.

    ``ramp``: "exp" (C-infinity, ``rho(x) = exp(-1/(alpha x^beta))``, ``beta`` in {1, 2}) or
    "monomial" (C^(order-1) with ``rho(x) = x^order``; ``order`` required). ``c_min``: floor of the
    linear weight ``c`` (and of ``f'``); ``alpha_min``: floor of the ramp parameter alpha.
    Forward: ``x`` (B, D), ``params`` (B, D, 5 K) -> ``(f(x), log f'(x))`` both (B, D).
    Inverse: multi-bin bisection with implicit gradients (base class).
    """

    has_jacobian = True
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
        # the points where f is pinned: f(0) = 0 (and f(1) = 1 on the interval)
        ends = [0.0] if circular else [0.0, 1.0]
        self.register_buffer("ends", torch.tensor(ends), persistent=False)
        # constants of the reverse pass (_jacobian), over (f, log f') x points [x, ends]
        n_pts = 1 + len(ends)
        self.register_buffer("basis", torch.eye(2).view(2, 2, 1, 1, 1, 1), persistent=False)
        self.register_buffer("sel_delta", torch.tensor([[1.0, -1.0] + [0.0] * (n_pts - 2), [0.0] * n_pts])
                             .view(2, 1, 1, n_pts, 1), persistent=False)  # f: +G(x) - G(0)
        self.register_buffer("sel_norm", torch.tensor([0.0, 1.0, -1.0][:n_pts]).view(n_pts, 1),
                             persistent=False)  # via N = G(1) - G(0)
        self.register_buffer("sel_dg", torch.tensor([[0.0] * n_pts, [1.0] + [0.0] * (n_pts - 1)])
                             .view(2, 1, 1, n_pts, 1), persistent=False)  # log f': g'(x)

    def extra_repr(self) -> str:
        return (f"n_components={self.n_components}, circular={self.circular}, ramp={self.ramp!r}, "
                f"beta={self.beta}, order={self.order}, c_min={self.c_min}")

    def _constrain(self, p: Tensor, dim: int) -> List[Tensor]:
        """Raw params with the 5 blocks on axis ``dim`` -> ``[a, b, 1 - c, alpha, w]`` (see the module docstring)."""
        pa, pb, pc, palpha, pw = p.unbind(dim)
        a = torch.exp(pa.clamp(max=9.0)) + 1.0  # a <= 1 + e^9: supports no narrower than ~1e-4
        b = torch.sigmoid(pb + self.b_offset.to(p.dtype))
        one_minus_c = (1.0 - self.c_min) * torch.sigmoid(torch.rsub(pc, -self.c_offset))
        alpha = F.softplus(palpha) + self.alpha_min
        return [a, b, one_minus_c, alpha, _softmax(pw)]

    def constrained(self, params: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, c, alpha, w)``, each (B, D, K), from raw params (B, D, 5 K)."""
        a, b, one_minus_c, alpha, w = self._constrain(
            params.reshape(list(params.shape[:-1]) + [5, self.n_components]), -2)
        return a, b, 1.0 - one_minus_c, alpha, w

    def _shape(self, params: Tensor) -> List[Tensor]:
        """-> ``[a, b, k = 2/alpha, wm = w (1 - c), cbar = sum_i w_i c_i, 1 - c, w]``, all (B, D, 1, K) but
        ``cbar`` (B, D, 1)."""
        a, b, one_minus_c, alpha, w = self._constrain(
            params.reshape(list(params.shape[:-1]) + [5, 1, self.n_components]), -3)
        wm = w * one_minus_c
        return [a, b, 2.0 / alpha, wm, torch.rsub(wm.sum(-1), 1.0), one_minus_c, w]

    def _points(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``x`` (B, D) -> ``x`` (B, D, 1) and the points ``[x, end points]`` (B, D, 1 + E)."""
        xm = x.unsqueeze(-1)
        ends = self.ends.to(x.dtype).expand(x.shape[0], x.shape[1], self.ends.shape[0])
        return xm, torch.cat([xm, ends], -1)

    def _bumps(self, x: Tensor, shape: List[Tensor], n_derivatives: int) -> List[Tensor]:
        """``x`` (B, D, M) -> the K lifted bump CDFs ``G_i(x)`` (B, D, M, K), then (``n_derivatives`` >= 1)
        ``g_i'`` (w.r.t. the ramp argument t), then (2) the pieces of the second derivatives:
        ``[G, g', g, g (1 - g), s, s', s'', z, d]`` with ``z = a d = t - 1/2``."""
        a, b, k = shape[0], shape[1], shape[2]
        d = x.unsqueeze(-1) - b
        n = d  # placeholder (TorchScript needs it bound); the winding number on the circle
        if self.circular:
            n = torch.round(d)
            d = d - n
        z = a * d
        s = logit(z, k, self.use_exp, self.beta, self.order, clamp_margin(x.dtype, self.use_exp, self.order),
                  n_derivatives)
        g = torch.sigmoid(s[0])
        lifted = g + n if self.circular else g
        if n_derivatives == 0:
            return [lifted]
        gg = g * torch.sigmoid(-s[0])
        dg = gg * s[1]
        if n_derivatives == 1:
            return [lifted, dg]
        return [lifted, dg, g, gg, s[0], s[1], s[2], z, d]

    def _normalise(self, wm: Tensor, g_ends: Tensor) -> List[Tensor]:
        """Bumps at the end points (B, D, E, K) -> ``[u, G(0)]`` (B, D, 1, K) and, on the interval,
        ``N = g(1) - g(0)`` (``u = wm / N``)."""
        if self.circular:
            return [wm, g_ends]
        g0, g1 = g_ends.split(1, dim=-2)
        norm = g1 - g0
        return [wm / norm, g0, norm]

    def _combine(self, x: Tensor, g: Tensor, dg: Tensor, a: Tensor, u: Tensor, g0: Tensor, cbar: Tensor,
                 with_logdet: bool) -> List[Tensor]:
        """``[f(x), log f'(x)]``, (B, D, M) each, with ``f(x) = sum_i u_i (G_i(x) - G_i(0)) + cbar x``
        (then the intermediates ``G(x) - G(0)``, ``u a``, ``f'``)."""
        delta = g - g0
        y = torch.addcmul((u * delta).sum(-1), cbar, x)
        if not with_logdet:
            return [y, y]
        ua = u * a
        fp = (ua * dg).sum(-1) + cbar
        return [y, torch.log(fp), delta, ua, fp]

    def forward_cached(self, x: Tensor, params: Tensor, need_cache: bool) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """``(f(x), log f'(x))`` (B, D) and, if ``need_cache``, ``[d(f, log f')/dx (2, B, D),
        d(f, log f')/dparams (2, B, D, 5 K)]`` (``base.elementwise_backward``), else ``[]``. The K bumps are
        evaluated at ``x`` and at the end points in one call; the cache adds their second-order pieces."""
        shape = self._shape(params)
        xm, points = self._points(x)
        parts = self._bumps(points, shape, 2 if need_cache else 1)  # at x and at the end points in one go
        gx, g_ends = parts[0].split([1, points.shape[-1] - 1], dim=-2)
        dgx = parts[1].narrow(-2, 0, 1)
        norm = self._normalise(shape[3], g_ends)
        out = self._combine(xm, gx, dgx, shape[0], norm[0], norm[1], shape[4], True)
        y, logd = out[0].squeeze(-1), out[1].squeeze(-1)
        if not need_cache:
            return y, logd, []
        return y, logd, self._jacobian(x, params, shape, xm, parts, dgx, norm, out)

    def _jacobian(self, x: Tensor, params: Tensor, shape: List[Tensor], xm: Tensor, parts: List[Tensor],
                  dgx: Tensor, norm: List[Tensor], out: List[Tensor]) -> List[Tensor]:
        """The reverse pass of ``forward_cached`` written out (no autograd), from its intermediates:
        ``[d(f, log f')/dx (2, B, D), d(f, log f')/dparams (2, B, D, 5 K)]``. Below ``_bar`` is the
        derivative of (f, log f') w.r.t. a quantity."""
        a, b, k, wm, cbar, one_minus_c, w = shape
        _, dg, g, gg, s, ds, dds, z, d = parts
        u = norm[0]
        delta, ua, fp = out[2], out[3], out[4]
        # f = sum u (G(x) - G(0)) + cbar x;  f' = sum u a g'(x) + cbar;  cbar = 1 - sum wm
        inv_fp = torch.reciprocal(fp).unsqueeze(-1)  # (B, D, 1, 1)
        dgx_fp = dgx * inv_fp
        u_bar = torch.stack([delta, a * dgx_fp])
        cbar_bar = torch.stack([xm, inv_fp.squeeze(-1)]).unsqueeze(-1)
        a_bar = (u * dgx_fp) * self.basis.to(x.dtype)[1]
        dg_bar = (ua * inv_fp) * self.sel_dg.to(x.dtype)  # f' reads g'(x): (2, B, D, P, K)
        gpts_bar = u * self.sel_delta.to(x.dtype)  # f reads G(x) - G(0)
        if self.circular:
            wm_bar = u_bar - cbar_bar
        else:  # u = wm / N, N = G(1) - G(0)
            un_bar = u_bar / norm[2]
            wm_bar = un_bar - cbar_bar
            gpts_bar = gpts_bar + (un_bar * u) * self.sel_norm.to(x.dtype)
        # g = sigmoid(s), g' = g (1 - g) s'; s, s' and s'' are functions of z (clamped) and proportional to k
        # (products ordered so that g (1 - g) = 0 meets no overflowing power of s' in float32)
        one_m2g = torch.rsub(g, 1.0, alpha=2.0)  # 1 - 2 g  (torch.rsub: one op in TorchScript)
        zc_bar = gpts_bar * dg + dg_bar * (one_m2g * (dg * ds) + gg * dds)
        z_bar = zc_bar * (z.abs() <= 0.5 - clamp_margin(x.dtype, self.use_exp, self.order))
        d_bar = z_bar * a
        a_bar = a_bar + (z_bar * d).sum(-2, keepdim=True)
        x_bar = torch.addcmul(d_bar.narrow(-2, 0, 1).sum(-1), cbar, self.basis.to(x.dtype)[0].squeeze(-1))
        pa, _, _, palpha, _ = params.reshape(list(params.shape[:-1]) + [5, 1, self.n_components]).unbind(-3)
        jac = [a_bar * ((a - 1.0) * (pa <= 9.0)), d_bar.sum(-2, keepdim=True) * (b * b - b),
               (wm_bar * w) * (one_minus_c * (one_minus_c * (1.0 / (1.0 - self.c_min)) - 1.0))]
        if self.use_exp:  # k = 2 / alpha, alpha = softplus(raw) + alpha_min: dk/draw = -(k^2 / 2) sigmoid(raw)
            ks_bar = (gpts_bar * (gg * s) + dg_bar * (dg * (one_m2g * s + 1.0))).sum(-2, keepdim=True)
            jac.append(ks_bar * ((-0.5 * k) * torch.sigmoid(palpha)))
        else:
            jac.append(torch.zeros_like(a_bar))
        w_bar = wm_bar * one_minus_c
        jac.append(w * (w_bar - (w * w_bar).sum(-1, keepdim=True)))
        jac_params = torch.stack(jac, dim=-3).reshape(2, x.shape[0], x.shape[1], self.n_params)
        return [x_bar.squeeze(-1), jac_params]

    def _prepare(self, params: Tensor) -> List[Tensor]:
        """-> ``[a, b, k, u, G(0)]`` (B, D, 1, K) and ``cbar`` (B, D, 1) (see the module docstring)."""
        shape = self._shape(params)
        ends = self.ends.to(params.dtype).expand(params.shape[0], params.shape[1], self.ends.shape[0])
        norm = self._normalise(shape[3], self._bumps(ends, shape, 0)[0])
        return [shape[0], shape[1], shape[2], norm[0], norm[1], shape[4]]

    def _evaluate(self, x: Tensor, prep: List[Tensor], with_logdet: bool) -> Tuple[Tensor, Tensor]:
        """``x`` (B, D, M) -> ``(f(x), log f'(x))`` (B, D, M); components broadcast on a trailing axis."""
        parts = self._bumps(x, prep, 1 if with_logdet else 0)
        out = self._combine(x, parts[0], parts[-1], prep[0], prep[3], prep[4], prep[5], with_logdet)
        return out[0], out[1]
