"""Affine baselines with analytic inverses.

* interval (``circular=False``, ``n_params = 2``): RealNVP in logit space,
  ``y = sigmoid(exp(s) * logit(x) + t)`` with raw params ``[s, t]`` (identity at params == 0). It is a
  bijection of the open interval (0, 1); the forward clamps ``x`` to ``[eps, 1 - eps]`` (``eps = 1e-6``
  by default), so f(0) = f(eps) is not 0 in general; the inverse only moves y = 0 or 1 to the nearest
  representable interior value.
  ``log f'(x) = s + logsigmoid(z) + logsigmoid(-z) - log x - log(1 - x)`` with ``z = exp(s) logit(x) + t``.
* circle (``circular=True``, ``n_params = 1``): rotation ``y = (x + t) mod 1``, ``log f' = 0``.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ElementwiseTransform


class Affine(ElementwiseTransform):
    """Logit-space affine map on [0, 1] or rotation on the circle (see module docstring)."""

    eps: float

    def __init__(self, circular: bool = False, eps: float = 1e-6) -> None:
        super().__init__(1 if circular else 2, circular)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"circular={self.circular}"

    def _prepare(self, params: Tensor) -> List[Tensor]:
        """-> [s, t] (B, D, 1) each (``s`` is zeros on the circle)."""
        if self.circular:
            return [torch.zeros_like(params[..., :1]), params[..., :1]]
        return [params[..., :1], params[..., 1:2]]

    def _evaluate(self, x: Tensor, prep: List[Tensor], with_logdet: bool) -> Tuple[Tensor, Tensor]:
        s, t = prep[0], prep[1]
        if self.circular:
            y = torch.remainder(x + t, 1.0)
            return y, torch.zeros_like(y)
        xc = x.clamp(self.eps, 1.0 - self.eps)
        lx = torch.log(xc)
        l1x = torch.log1p(-xc)
        z = torch.exp(s) * (lx - l1x) + t
        y = torch.sigmoid(z)
        if not with_logdet:
            return y, y
        return y, s + 2.0 * F.logsigmoid(z) - z - lx - l1x

    def inverse(self, y: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        """Analytic inverse: ``y`` (B, D) -> ``(x, -log f'(x))`` (B, D)."""
        s, t = self._prepare(params)
        s, t = s.squeeze(-1), t.squeeze(-1)
        if self.circular:
            return torch.remainder(y - t, 1.0), torch.zeros_like(y)
        info = torch.finfo(y.dtype)
        yc = y.clamp(info.tiny, 1.0 - info.eps / 2)  # only exact 0 and 1 are moved: round trips stay exact
        ly = torch.log(yc)
        l1y = torch.log1p(-yc)
        u = (ly - l1y - t) * torch.exp(-s)
        x = torch.sigmoid(u)
        # log dx/dy = -s + log x + log(1 - x) - log y - log(1 - y)
        return x, -s + 2.0 * F.logsigmoid(u) - u - ly - l1y
