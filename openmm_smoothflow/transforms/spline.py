"""Rational-quadratic spline on [0, 1] or on the circle (Durkan et al. 2019; circular: Rezende et al.).

A C^1 (not C^2) baseline with an analytic inverse. K bins with knots ``(x_k, y_k)``, k = 0..K, and
positive knot derivatives ``d_k``. On bin k, with ``theta = (x - x_k) / w_k`` and ``s_k = h_k / w_k``:

    f(x) = y_k + h_k (s_k theta^2 + d_k theta (1 - theta)) / (s_k + (d_{k+1} + d_k - 2 s_k) theta (1 - theta))

Parametrisation: raw params (B, D, n_params) = [widths K | heights K | derivatives], with
``n_params = 3 K + 1`` on the interval (free boundary derivatives d_0 and d_K) and ``3 K`` on the circle
(``d_K = d_0``, so f' is periodic):

* ``w = min_bin_width + (1 - K min_bin_width) softmax(raw)``  (heights likewise)
* ``d = min_derivative + softplus(raw + log(expm1(1 - min_derivative)))``  (= 1 at raw == 0)

so ``params == 0`` is exactly the identity. Inputs: on the interval ``x`` is clamped to [0, 1] (the
log-derivative there is the boundary derivative); on the circle ``x`` is wrapped,
``f(x + n) = f(x) + n``.
"""
import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ElementwiseTransform


class RationalQuadraticSpline(ElementwiseTransform):
    """Neural-spline elementwise transform with ``n_bins`` bins (see module docstring)."""

    n_bins: int
    min_bin_width: float
    min_bin_height: float
    min_derivative: float
    d_offset: float

    def __init__(self, n_bins: int = 8, circular: bool = False, min_bin_width: float = 1e-3,
                 min_bin_height: float = 1e-3, min_derivative: float = 1e-3) -> None:
        super().__init__(3 * n_bins + (0 if circular else 1), circular)
        if min_bin_width * n_bins >= 1 or min_bin_height * n_bins >= 1:
            raise ValueError("minimal bin width/height too large for n_bins")
        self.n_bins = n_bins
        self.min_bin_width = float(min_bin_width)
        self.min_bin_height = float(min_bin_height)
        self.min_derivative = float(min_derivative)
        self.d_offset = math.log(math.expm1(1.0 - min_derivative))

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}, circular={self.circular}"

    def _prepare(self, params: Tensor) -> List[Tensor]:
        """-> [cum_widths, cum_heights, derivatives], each (B, D, K + 1)."""
        k = self.n_bins
        w = self.min_bin_width + (1.0 - self.min_bin_width * k) * torch.softmax(params[..., :k], dim=-1)
        h = self.min_bin_height + (1.0 - self.min_bin_height * k) * torch.softmax(params[..., k:2 * k], dim=-1)
        d = self.min_derivative + F.softplus(params[..., 2 * k:] + self.d_offset)
        if self.circular:
            d = torch.cat([d, d[..., :1]], dim=-1)
        zero = torch.zeros_like(w[..., :1])
        one = torch.ones_like(zero)
        cw = torch.cat([zero, torch.cumsum(w[..., :-1], dim=-1), one], dim=-1)
        ch = torch.cat([zero, torch.cumsum(h[..., :-1], dim=-1), one], dim=-1)
        return [cw, ch, d]

    def _bin(self, knots: Tensor, v: Tensor) -> Tensor:
        """Bin index in [0, K - 1] of ``v`` (B, D, M) given knots (B, D, K + 1)."""
        inner = knots[..., 1:-1].contiguous()
        return torch.searchsorted(inner, v.contiguous(), right=True)

    def _gather(self, cw: Tensor, ch: Tensor, d: Tensor, idx: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        idx1 = idx + 1
        x0 = cw.gather(-1, idx)
        y0 = ch.gather(-1, idx)
        wk = cw.gather(-1, idx1) - x0
        hk = ch.gather(-1, idx1) - y0
        return x0, y0, wk, hk, d.gather(-1, idx), d.gather(-1, idx1)

    def _wrap(self, v: Tensor) -> Tuple[Tensor, Tensor]:
        if self.circular:
            n = torch.floor(v)
            return v - n, n
        return v.clamp(0.0, 1.0), torch.zeros_like(v)

    def _apply(self, x: Tensor, prep: List[Tensor], with_logdet: bool) -> Tuple[Tensor, Tensor]:
        cw, ch, d = prep[0], prep[1], prep[2]
        xc, n = self._wrap(x)
        x0, y0, wk, hk, d0, d1 = self._gather(cw, ch, d, self._bin(cw, xc))
        sk = hk / wk
        th = (xc - x0) / wk
        t1 = th * (1.0 - th)
        denom = sk + (d1 + d0 - 2.0 * sk) * t1
        y = y0 + hk * (sk * th * th + d0 * t1) / denom + n
        if not with_logdet:
            return y, y
        num = sk * sk * (d1 * th * th + 2.0 * sk * t1 + d0 * (1.0 - th) * (1.0 - th))
        return y, torch.log(num) - 2.0 * torch.log(denom)

    def inverse(self, y: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        """Analytic inverse: ``y`` (B, D) -> ``(x, -log f'(x))`` (B, D), differentiable by autograd."""
        cw, ch, d = self._prepare(params)
        yv = y.unsqueeze(-1)
        yc, n = self._wrap(yv)
        x0, y0, wk, hk, d0, d1 = self._gather(cw, ch, d, self._bin(ch, yc))
        sk = hk / wk
        dy = yc - y0
        dsum = d1 + d0 - 2.0 * sk
        qa = hk * (sk - d0) + dy * dsum
        qb = hk * d0 - dy * dsum
        qc = -sk * dy
        disc = (qb * qb - 4.0 * qa * qc).clamp_min(0.0)
        th = (2.0 * qc) / (-qb - torch.sqrt(disc))
        x = x0 + th * wk + n
        t1 = th * (1.0 - th)
        denom = sk + dsum * t1
        num = sk * sk * (d1 * th * th + 2.0 * sk * t1 + d0 * (1.0 - th) * (1.0 - th))
        return x.squeeze(-1), (2.0 * torch.log(denom) - torch.log(num)).squeeze(-1)
