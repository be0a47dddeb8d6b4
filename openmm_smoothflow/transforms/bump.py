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

Parametrisation (as the paper's reference code): raw params (B, D, 5 K), read as (B, D, 5, K) =
[a | b | c | lambda | w] blocks of K:

* interval: ``a_i = exp(tanh(raw))`` in [1/e, e]; circle: ``a_i = exp(sigmoid(raw))`` in [1, e] (the
  circle needs ``a >= 1``: support at most 1 wide). Bounded: the sharp peaks of stiff bonds come from the
  ramp slope and the composition of layers, not from a concentration of thousands
* ``b_i = sigmoid(raw + logit((i + 1/2) / K))``                      (params == 0 spreads the K bumps)
* ``c_i = c_min + (1 - c_min) sigmoid(raw + c_offset)``              (in (c_min, 1]: the weight of the
  uniform part, floor ``c_min = 1e-6``; ``c_offset = 0``: c = 1/2 at params == 0)
* exp ramp: the slope ``lambda_i = 1 / alpha_i = slope_max sigmoid(raw) + lambda_min`` with
  ``slope_max = 10`` and ``lambda_min`` the unimodality bound (sqrt(3)/2 = 0.866 for beta = 1, sqrt(6)/8
  = 0.306 for beta = 2: below it a bump's density has two maxima); ``k = 2 / alpha = 2 lambda`` in
  [1.73, 21.7] (beta = 1).
  The reference code writes the ramp as ``exp(lambda (1 - 1/x^beta))``; ours, ``exp(-1/(alpha x^beta))``,
  is the same generalized sigmoid with ``alpha = 1/lambda``. The monomial ramp ignores this block.
* ``w = softmax(raw)``                                               (uniform at params == 0)

``legacy=True`` restores the map of models made before this one (``a = 1 + exp(min(raw, 9))``,
``alpha = softplus(raw) + 0.01``, ``c_min = 1e-3``, ``c_offset = 3``, usually with beta = 2), so that
their files still load; new models should not use it.

At params == 0 the transform is the blend ``x/2 + (mixture of K evenly spread bumps)/2``, within a
few percent of the identity (``|f(x) - x| < 0.05``, ``|log f'| < 1``).

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

# the smallest ramp slope lambda = 1/alpha at which sigma[rho]' has one maximum (exp ramp, beta = 1, 2):
# expanding sigma' about t = 1/2, its curvature there is <= 0 iff (2 lambda)^2 >= 3 (beta = 1) or 3/8
# (beta = 2). The paper's reference code uses 0.8657 and 0.3052, just below (barely bimodal there);
# tests/transforms check the bound numerically
UNIMODAL_SLOPE = {1: math.sqrt(3.0) / 2.0, 2: math.sqrt(6.0) / 8.0}


class BumpMixture(ElementwiseTransform):
    """Convex mixture of ``n_components`` smooth bump CDFs; ``n_params = 5 * n_components``.

    ``ramp``: "exp" (C-infinity, ``rho(x) = exp(-1/(alpha x^beta))``, ``beta`` in {1, 2}) or
    "monomial" (C^(order-1) with ``rho(x) = x^order``; ``order`` required). ``c_min``: floor of the
    linear weight ``c`` (and of ``f'``); ``c_offset``: ``c = c_min + (1 - c_min) sigmoid(raw + c_offset)``;
    ``slope_max``: range of the ramp slope ``1/alpha`` above its unimodality bound (module docstring).
    Forward: ``x`` (B, D), ``params`` (B, D, 5 K) -> ``(f(x), log f'(x))`` both (B, D).
    Inverse: multi-bin bisection with implicit gradients (base class).
    """

    has_jacobian = True
    n_components: int
    use_exp: bool
    beta: int
    order: int
    c_min: float
    c_offset: float
    slope_max: float
    slope_min: float
    legacy: bool

    def __init__(self, n_components: int = 8, circular: bool = False, ramp: str = "exp", beta: int = 1,
                 order: Optional[int] = None, c_min: float = 1e-6, c_offset: float = 0.0,
                 slope_max: float = 10.0, legacy: bool = False) -> None:
        super().__init__(5 * n_components, circular)
        if ramp not in ("exp", "monomial"):
            raise ValueError(f"ramp must be 'exp' or 'monomial', got {ramp!r}")
        if ramp == "monomial" and (order is None or order < 1):
            raise ValueError("ramp='monomial' needs an integer order >= 1")
        if legacy:
            c_min, c_offset = 1e-3, 3.0
        elif ramp == "exp" and beta not in UNIMODAL_SLOPE:
            raise ValueError(f"beta must be one of {sorted(UNIMODAL_SLOPE)} for the exp ramp, got {beta}")
        if not 0.0 < c_min < 1.0:
            raise ValueError("c_min must lie in (0, 1)")
        self.n_components = n_components
        self.ramp = ramp
        self.use_exp = ramp == "exp"
        self.beta = int(beta)
        self.order = int(order) if order is not None else 0
        self.c_min = float(c_min)
        self.c_offset = float(c_offset)
        self.slope_max = float(slope_max)
        self.slope_min = UNIMODAL_SLOPE.get(int(beta), 1.0)
        self.legacy = bool(legacy)
        # groups of the params per dimension that the paper's conditioners compute with separate MLPs:
        # [a, b, c] | ramp slopes | mixture weights (``flows.coupling.Conditioner``)
        self.param_groups = [3 * n_components, n_components, n_components]
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
                f"beta={self.beta}, order={self.order}, c_min={self.c_min}, c_offset={self.c_offset}")

    def _constrain(self, p: Tensor, dim: int) -> List[Tensor]:
        """Raw params with the 5 blocks on axis ``dim`` -> ``[a, b, 1 - c, k = 2/alpha, w, sigmoid(raw_k)]``
        (see the module docstring; the last is what dk/draw needs)."""
        pa, pb, pc, pk, pw = p.unbind(dim)
        b = torch.sigmoid(pb + self.b_offset.to(p.dtype))
        one_minus_c = (1.0 - self.c_min) * torch.sigmoid(torch.rsub(pc, -self.c_offset))
        sk = torch.sigmoid(pk)
        if self.legacy:  # a = 1 + e^min(raw, 9); k = 2 / (softplus(raw) + 0.01)
            a = torch.exp(pa.clamp(max=9.0)) + 1.0
            k = 2.0 / (F.softplus(pk) + 1e-2)
        else:
            a = torch.exp(torch.sigmoid(pa) if self.circular else torch.tanh(pa))
            k = (2.0 * self.slope_max) * sk + 2.0 * self.slope_min
        return [a, b, one_minus_c, k, _softmax(pw), sk]

    def constrained(self, params: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, c, alpha, w)``, each (B, D, K), from raw params (B, D, 5 K); ``alpha = 2/k`` is the exp
        ramp's ``alpha`` (``ramps.py``: ``rho(x) = exp(-1/(alpha x^beta))``)."""
        a, b, one_minus_c, k, w, _ = self._constrain(
            params.reshape(list(params.shape[:-1]) + [5, self.n_components]), -2)
        return a, b, 1.0 - one_minus_c, 2.0 / k, w

    def _shape(self, params: Tensor) -> List[Tensor]:
        """-> ``[a, b, k = 2/alpha, wm = w (1 - c), cbar = sum_i w_i c_i, 1 - c, w, sigmoid(raw_k)]``, all
        (B, D, 1, K) but ``cbar`` (B, D, 1)."""
        a, b, one_minus_c, k, w, sk = self._constrain(
            params.reshape(list(params.shape[:-1]) + [5, 1, self.n_components]), -3)
        wm = w * one_minus_c
        return [a, b, k, wm, torch.rsub(wm.sum(-1), 1.0), one_minus_c, w, sk]

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
        a, b, k, wm, cbar, one_minus_c, w, sk = shape
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
        # da/draw: a (1 - tanh^2) on the interval (log a = tanh), a sigmoid (1 - sigmoid) on the circle
        log_a = torch.log(a)
        da = a * (log_a - log_a * log_a) if self.circular else a * torch.rsub(log_a * log_a, 1.0)
        if self.legacy:  # a - 1 = e^raw below the clamp
            pa = params.reshape(list(params.shape[:-1]) + [5, 1, self.n_components]).unbind(-3)[0]
            da = (a - 1.0) * (pa <= 9.0)
        jac = [a_bar * da, d_bar.sum(-2, keepdim=True) * (b * b - b),
               (wm_bar * w) * (one_minus_c * (one_minus_c * (1.0 / (1.0 - self.c_min)) - 1.0))]
        if self.use_exp:  # k = 2 slope_max sigmoid(raw) + 2 slope_min: dk/draw = 2 slope_max sk (1 - sk)
            ks_bar = (gpts_bar * (gg * s) + dg_bar * (dg * (one_m2g * s + 1.0))).sum(-2, keepdim=True)
            if self.legacy:  # dk/draw = -(k^2 / 2) sigmoid(raw)
                jac.append(ks_bar * ((-0.5 * k) * sk))
            else:
                jac.append(ks_bar * ((2.0 * self.slope_max) * (sk - sk * sk) / k))
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
