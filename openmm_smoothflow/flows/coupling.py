"""Coupling layers: a conditioner network reads one set of unit-box coordinates and outputs the shape
parameters of an elementwise transform applied to another set.

The whole flow state is one tensor ``u`` (B, D) of unit-box coordinates (bonds, angles, torsions side
by side); a layer is described by two index buffers, ``cond_idx`` (what it reads) and ``out_idx`` (what
it transforms). This keeps every layer the same TorchScript type and the architecture a plain list.

Every module here has ONE forward, ``forward_cached(..., need_cache)``, that returns its outputs and, if
asked, what its hand-written backward (:func:`conditioner_backward`, :func:`coupling_backward`) needs;
``forward`` is that without the cache (autograd, training, sampling). The exported MD energy runs the
density direction with the cache and the backward functions, no autograd graph, because at batch 1
autograd's per-operation overhead, not arithmetic, is the cost of a force.
"""

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..transforms.base import ElementwiseTransform, elementwise_backward


class Sin(nn.Module):
    """``sin``; ``forward_cached`` records ``cos(x)`` (its derivative) in ``derivatives`` if ``need_cache``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_cached(x, False, [], [])

    def forward_cached(self, x: Tensor, need_cache: bool, weights: List[Tensor], derivatives: List[Tensor]) -> Tensor:
        if need_cache:
            derivatives.append(torch.cos(x))
        return torch.sin(x)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters) that records its weight in ``weights`` if ``need_cache``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_cached(x, False, [], [])

    def forward_cached(self, x: Tensor, need_cache: bool, weights: List[Tensor], derivatives: List[Tensor]) -> Tensor:
        if need_cache:
            weights.append(self.weight)
        return F.linear(x, self.weight, self.bias)


class Conditioner(nn.Module):
    """MLP with sin activations: (B, C) unit-box coordinates -> (B, D_out, n_params) raw parameters.

    Circular inputs (``circular`` mask, one bool per input) enter as cos/sin of 2 pi t so the network is
    periodic in them; the others enter as they are. The last layer starts at zero, so every transform
    starts at its ``params == 0`` shape (close to the identity).

    ``forward`` takes the *gathered* inputs ``v = cond[:, feature_idx]`` (circular inputs twice, then the
    others): ``[cos 2 pi v_circ, sin 2 pi v_circ, v_flat]``.
    """

    n_circ: int
    n_flat: int

    def __init__(self, circular: List[bool], n_out: int, n_params: int, hidden: Tuple[int, ...] = (64, 64)):
        super().__init__()
        circ = torch.tensor(circular, dtype=torch.bool)
        self.register_buffer("circ_idx", torch.nonzero(circ).flatten())
        self.register_buffer("flat_idx", torch.nonzero(~circ).flatten())
        self.n_out = n_out
        self.n_params = n_params
        self.n_circ, self.n_flat = int(circ.sum()), int((~circ).sum())
        self.feature_idx = self.circ_idx.tolist() * 2 + self.flat_idx.tolist()
        nc = self.n_circ
        n_in = 2 * nc + self.n_flat
        layers: List[nn.Module] = []
        for width in hidden:
            layers += [Linear(n_in, width), Sin()]
            n_in = width
        last = Linear(n_in, n_out * n_params)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def _features(self, v: Tensor) -> Tensor:
        """Gathered inputs (B, F) -> network features (B, F)."""
        if self.n_circ == 0:
            return v
        nc = self.n_circ
        angle = (2.0 * math.pi) * v.narrow(1, 0, 2 * nc)
        feats = [torch.cos(angle.narrow(1, 0, nc)), torch.sin(angle.narrow(1, nc, nc))]
        if self.n_flat > 0:
            feats.append(v.narrow(1, 2 * nc, self.n_flat))
        return torch.cat(feats, dim=1)

    def forward(self, v: Tensor) -> Tensor:
        return self.forward_cached(v, False)[0]

    def forward_cached(self, v: Tensor, need_cache: bool) -> Tuple[Tensor, List[Tensor]]:
        """Raw params (B, D_out, n_params) and, if ``need_cache``, the cache of :func:`conditioner_backward`:
        ``[d features / dv, W_1, cos h_1, W_2, cos h_2, ..., W_last]`` (``h_j`` the pre-activations), else ``[]``."""
        feats = self._features(v)
        weights: List[Tensor] = []
        derivatives: List[Tensor] = []
        h = feats
        for module in self.net:
            h = module.forward_cached(h, need_cache, weights, derivatives)
        params = h.view(v.shape[0], self.n_out, self.n_params)
        if not need_cache:
            return params, derivatives  # both lists are empty
        # d features / dv: (-2 pi sin, 2 pi cos) for the circular inputs (cos and sin of the same angles), 1
        # for the others (then left out: an empty tensor)
        dfeats = v.narrow(1, 0, 0)
        if self.n_circ > 0:
            nc = self.n_circ
            dfeats = torch.cat([-feats.narrow(1, nc, nc), feats.narrow(1, 0, nc)], dim=1) * (2.0 * math.pi)
            if self.n_flat > 0:
                dfeats = torch.cat([dfeats, torch.ones_like(v.narrow(1, 2 * nc, self.n_flat))], dim=1)
        cache = [dfeats]
        for i in range(len(derivatives)):
            cache += [weights[i], derivatives[i]]
        cache.append(weights[-1])
        return params, cache


def conditioner_backward(grad: Tensor, cache: List[Tensor]) -> Tensor:
    """d/dv of ``(grad * conditioner(v)).sum()`` from ``Conditioner.forward_cached``'s cache; ``grad``
    (B, D_out, n_params) -> (B, F)."""
    g = torch.mm(grad.reshape(grad.shape[0], -1), cache[-1])
    for i in range(len(cache) - 3, 0, -2):  # [dfeats, W1, cos1, W2, cos2, W3]: cos_j then W_j, backwards
        g = torch.mm(g * cache[i + 1], cache[i])
    return g * cache[0] if cache[0].shape[1] > 0 else g


class CouplingLayer(nn.Module):
    """Transforms ``u[:, out_idx]`` elementwise, conditioned on ``u[:, cond_idx]``.

    Density direction (``forward``, x -> z): applies ``transform.forward`` (the analytic CDF map), or
    ``transform.inverse`` when ``inverted`` (the paper's section 6.4 orientation). ``inverse`` (z -> x)
    does the opposite. Both return the new state (B, D) and log|det| (B,) of the map they applied.
    """

    n_feat: int
    n_out: int

    def __init__(
        self,
        transform: ElementwiseTransform,
        cond_idx: List[int],
        out_idx: List[int],
        circular: List[bool],
        hidden: Tuple[int, ...] = (64, 64),
        inverted: bool = False,
    ):
        super().__init__()
        if set(cond_idx) & set(out_idx):
            raise ValueError("a coupling layer cannot condition on the coordinates it transforms")
        self.transform = transform
        self.register_buffer("cond_idx", torch.tensor(cond_idx, dtype=torch.long))
        self.register_buffer("out_idx", torch.tensor(out_idx, dtype=torch.long))
        self.conditioner = Conditioner([circular[i] for i in cond_idx], len(out_idx), transform.n_params, hidden)
        self.inverted = inverted
        # one gather per call: the conditioner's inputs (in its feature order), then the coordinates to transform
        feat = [cond_idx[i] for i in self.conditioner.feature_idx]
        self.n_feat, self.n_out = len(feat), len(out_idx)
        self.register_buffer("feat_idx", torch.tensor(feat, dtype=torch.long), persistent=False)
        self.register_buffer("gather_idx", torch.tensor(feat + list(out_idx), dtype=torch.long), persistent=False)

    @torch.jit.unused
    def _inverse_transform(self, x: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        return self.transform.inverse(x, params)

    def _couple(self, u: Tensor, analytic: bool, need_cache: bool) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """Apply ``transform.forward`` (``analytic``) or ``transform.inverse`` to ``u[:, out_idx]``; the cache
        (``analytic`` only) is ``[out_idx, feat_idx, transform cache (2 tensors), conditioner cache...]``."""
        v, x = u.index_select(1, self.gather_idx).split([self.n_feat, self.n_out], dim=1)
        params, cond_cache = self.conditioner.forward_cached(v, need_cache)
        cache: List[Tensor] = []
        if analytic:
            y, logdet, cache = self.transform.forward_cached(x, params, need_cache)
        elif need_cache:
            raise ValueError("the hand-written backward needs the analytic (density) orientation")
        else:
            y, logdet = self._inverse_transform(x, params)
        if need_cache:
            cache = [self.out_idx, self.feat_idx] + cache + cond_cache
        return u.index_copy(1, self.out_idx, y), logdet.sum(dim=1), cache

    def forward(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        u_out, logdet, _ = self._couple(u, not self.inverted, False)
        return u_out, logdet

    def forward_cached(self, u: Tensor, need_cache: bool) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """``forward`` (density direction, x -> z) and, if ``need_cache``, the cache of
        :func:`coupling_backward` (else ``[]``); the cache needs the not-inverted orientation."""
        return self._couple(u, not self.inverted, need_cache)

    @torch.jit.unused
    def inverse(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        u_out, logdet, _ = self._couple(u, self.inverted, False)
        return u_out, logdet


def coupling_backward(grad: Tensor, cache: List[Tensor]) -> Tensor:
    """Gradient of ``E = L(u_out) - sum log f'`` w.r.t. the layer's input ``u`` (B, D), given
    ``grad = dL/du_out`` (B, D) and the cache of ``CouplingLayer.forward_cached``."""
    out_idx, feat_idx = cache[0], cache[1]
    grad_x, grad_params = elementwise_backward(grad.index_select(1, out_idx), -1.0, cache[2:4])
    grad_v = conditioner_backward(grad_params, cache[4:])
    return grad.index_copy(1, out_idx, grad_x).index_add(1, feat_idx, grad_v)
