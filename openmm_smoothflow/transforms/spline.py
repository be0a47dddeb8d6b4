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


def _softmax(z: Tensor) -> Tensor:
    """Softmax over the last (short) axis; much faster on CPU than ``torch.softmax`` for 8 entries."""
    e = torch.exp(z - z.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def _log_slope(th: Tensor, t1: Tensor, denom: Tensor, sk: Tensor, d0: Tensor, d1: Tensor) -> Tensor:
    """``log f'`` on a bin at ``theta = th`` (``t1 = theta (1 - theta)``, ``denom = s_k + (d_k + d_{k+1} -
    2 s_k) t1``): ``f' = s_k^2 (d_{k+1} theta^2 + 2 s_k t1 + d_k (1 - theta)^2) / denom^2``."""
    num = sk * sk * (d1 * th * th + 2.0 * sk * t1 + d0 * (1.0 - th) * (1.0 - th))
    return torch.log(num) - 2.0 * torch.log(denom)


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
        """-> [inner x-knots (B, D, K - 1), inner y-knots (B, D, K - 1), per-bin table (8, B * D * K),
        offsets (B, D, 1)]; table rows ``[x_k, 1/w_k, y_k, h_k, s_k, d_k, d_{k+1}, d_k + d_{k+1} - 2 s_k]``
        (one ``index_select`` per evaluation fetches a point's whole bin)."""
        k = self.n_bins
        w = self.min_bin_width + (1.0 - self.min_bin_width * k) * _softmax(params[..., :k])
        h = self.min_bin_height + (1.0 - self.min_bin_height * k) * _softmax(params[..., k:2 * k])
        d = self.min_derivative + F.softplus(params[..., 2 * k:] + self.d_offset)
        if self.circular:
            d = torch.cat([d, d[..., :1]], dim=-1)
        zero = torch.zeros_like(w[..., :1])
        cw = torch.cat([zero, torch.cumsum(w[..., :-1], dim=-1)], dim=-1)  # left knots x_0..x_{K-1}
        ch = torch.cat([zero, torch.cumsum(h[..., :-1], dim=-1)], dim=-1)
        w = torch.cat([cw[..., 1:], torch.ones_like(zero)], dim=-1) - cw  # widths that sum to 1 exactly
        h = torch.cat([ch[..., 1:], torch.ones_like(zero)], dim=-1) - ch
        s = h / w
        d0, d1 = d[..., :-1], d[..., 1:]
        table = torch.stack([cw, 1.0 / w, ch, h, s, d0, d1, d0 + d1 - 2.0 * s], dim=0).reshape(8, -1)
        # column offset of each element's first bin in the flattened (8, B * D * K) table
        n_rows = table.shape[1] // k
        base = (torch.arange(n_rows, device=params.device) * k).view(list(cw.shape[:-1]) + [1])
        return [cw[..., 1:].contiguous(), ch[..., 1:].contiguous(), table, base]

    def _lookup(self, knots: Tensor, prep: List[Tensor], v: Tensor) -> List[Tensor]:
        """Bin data at ``v`` (B, D, M): bin index from the inner knots, then one ``index_select`` of the
        flattened per-bin table -> 8 tensors (B, D, M)."""
        if self.n_bins <= 16 and v.numel() >= 8192:  # counting knots beats searchsorted on CPU for
            # few bins and many points (for few points the op count matters more)
            idx = prep[3] + torch.zeros(v.shape, dtype=torch.long, device=v.device)
            for i in range(self.n_bins - 1):
                idx.add_(v >= knots[..., i:i + 1])
        else:
            idx = torch.searchsorted(knots, v.contiguous(), right=True) + prep[3]
        cols = prep[2].index_select(1, idx.reshape(-1))
        return cols.view([8] + list(idx.shape)).unbind(0)

    def _wrap(self, v: Tensor) -> Tuple[Tensor, Tensor]:
        if self.circular:
            n = torch.floor(v)
            return v - n, n
        return v.clamp(0.0, 1.0), v

    def _evaluate(self, x: Tensor, prep: List[Tensor], with_logdet: bool) -> Tuple[Tensor, Tensor]:
        xc, n = self._wrap(x)
        x0, inv_w, y0, hk, sk, d0, d1, dsum = self._lookup(prep[0], prep, xc)
        th = (xc - x0) * inv_w
        t1 = th * (1.0 - th)
        denom = sk + dsum * t1
        y = y0 + hk * (sk * th * th + d0 * t1) / denom
        if self.circular:
            y = y + n
        if not with_logdet:
            return y, y
        return y, _log_slope(th, t1, denom, sk, d0, d1)

    def inverse(self, y: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        """Analytic inverse: ``y`` (B, D) -> ``(x, -log f'(x))`` (B, D), differentiable by autograd."""
        prep = self._prepare(params)
        yc, n = self._wrap(y.unsqueeze(-1))
        x0, inv_w, y0, hk, sk, d0, d1, dsum = self._lookup(prep[1], prep, yc)
        dy = yc - y0
        qa = hk * (sk - d0) + dy * dsum
        qb = hk * d0 - dy * dsum
        qc = -sk * dy
        disc = (qb * qb - 4.0 * qa * qc).clamp_min(0.0)
        th = (2.0 * qc) / (-qb - torch.sqrt(disc))
        x = x0 + th / inv_w
        if self.circular:
            x = x + n
        t1 = th * (1.0 - th)
        return x.squeeze(-1), -_log_slope(th, t1, sk + dsum * t1, sk, d0, d1).squeeze(-1)
