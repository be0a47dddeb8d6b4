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
from typing import List, Optional, Tuple

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


def _mlp(n_in: int, hidden: Tuple[int, ...], n_out: int, init: str, zero_last: bool) -> nn.Sequential:
    """``Linear, Sin, ..., Linear``. ``init``: "default" (PyTorch's Linear init) or "siren" (every weight
    U(-sqrt(6/n), sqrt(6/n)) for n inputs, the paper's reference code's SIREN scheme; the first layer
    ``x30`` with "siren30"). ``zero_last``: the output layer starts at zero."""
    layers: List[nn.Module] = []
    for width in hidden:
        layers += [Linear(n_in, width), Sin()]
        n_in = width
    layers.append(Linear(n_in, n_out))
    linears = [m for m in layers if isinstance(m, Linear)]
    if init.startswith("siren"):
        with torch.no_grad():
            for m in linears:
                bound = math.sqrt(6.0 / m.weight.shape[1])
                m.weight.uniform_(-bound, bound)
            if init == "siren30":
                linears[0].weight.mul_(30.0)
    elif init != "default":
        raise ValueError(f"conditioner init must be 'default', 'siren' or 'siren30', not {init!r}")
    if zero_last:
        nn.init.zeros_(linears[-1].weight)
        nn.init.zeros_(linears[-1].bias)
    return nn.Sequential(*layers)


class Conditioner(nn.Module):
    """MLPs with sin activations: (B, C) unit-box coordinates -> (B, D_out, n_params) raw parameters.

    ``groups`` (sizes summing to ``n_params``; default one group): one MLP per group of each output
    dimension's params, as the paper's reference code (a bump mixture: [a, b, c] | slopes | weights, three
    MLPs); the outputs are concatenated on the last axis in group order. Circular inputs (``circular``
    mask, one bool per input) enter as cos/sin of 2 pi t so the networks are periodic in them; the others
    enter as they are. ``init`` / ``zero_last``: see :func:`_mlp` (zero last layer: every transform starts
    at its ``params == 0`` shape).

    ``forward`` takes the *gathered* inputs ``v = cond[:, feature_idx]`` (circular inputs twice, then the
    others): ``[cos 2 pi v_circ, sin 2 pi v_circ, v_flat]``.
    """

    n_circ: int
    n_flat: int
    n_groups: int

    def __init__(self, circular: List[bool], n_out: int, n_params: int, hidden: Tuple[int, ...] = (64, 64),
                 groups: Optional[List[int]] = None, init: str = "default", zero_last: bool = True):
        super().__init__()
        groups = list(groups) if groups else [n_params]
        if sum(groups) != n_params or min(groups) < 1:
            raise ValueError(f"conditioner groups {groups} must be positive and sum to n_params = {n_params}")
        circ = torch.tensor(circular, dtype=torch.bool)
        self.register_buffer("circ_idx", torch.nonzero(circ).flatten())
        self.register_buffer("flat_idx", torch.nonzero(~circ).flatten())
        self.n_out = n_out
        self.n_params = n_params
        self.groups = groups
        self.n_groups = len(groups)
        self.n_circ, self.n_flat = int(circ.sum()), int((~circ).sum())
        self.feature_idx = self.circ_idx.tolist() * 2 + self.flat_idx.tolist()
        n_in = 2 * self.n_circ + self.n_flat
        # the first group's MLP is ``net`` (the name models with one MLP per layer stored it under)
        self.net = _mlp(n_in, hidden, n_out * groups[0], init, zero_last)
        self.group_nets = nn.ModuleList([_mlp(n_in, hidden, n_out * g, init, zero_last) for g in groups[1:]])
        # conditioner_backward reads (groups, cache entries per MLP) from this buffer's SHAPE: static under
        # tracing and export (a value read from a tensor would be data-dependent), no op per call
        self.register_buffer("layout", torch.zeros(self.n_groups, 2 * len(hidden) + 1), persistent=False)

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
        ``[d features / dv, layout, then per MLP: W_1, cos h_1, W_2, cos h_2, ..., W_last]`` (``h_j`` the
        pre-activations), else ``[]``."""
        feats = self._features(v)
        weights: List[Tensor] = []
        derivatives: List[Tensor] = []
        h = feats
        for module in self.net:
            h = module.forward_cached(h, need_cache, weights, derivatives)
        outs = [h.view(v.shape[0], self.n_out, -1)]
        caches = [(weights, derivatives)]
        for net in self.group_nets:
            w_j: List[Tensor] = []
            d_j: List[Tensor] = []
            h = feats
            for module in net:
                h = module.forward_cached(h, need_cache, w_j, d_j)
            outs.append(h.view(v.shape[0], self.n_out, -1))
            caches.append((w_j, d_j))
        params = outs[0] if self.n_groups == 1 else torch.cat(outs, dim=2)
        if not need_cache:
            return params, derivatives  # an empty list
        # d features / dv: (-2 pi sin, 2 pi cos) for the circular inputs (cos and sin of the same angles), 1
        # for the others (then left out: an empty tensor)
        dfeats = v.narrow(1, 0, 0)
        if self.n_circ > 0:
            nc = self.n_circ
            dfeats = torch.cat([-feats.narrow(1, nc, nc), feats.narrow(1, 0, nc)], dim=1) * (2.0 * math.pi)
            if self.n_flat > 0:
                dfeats = torch.cat([dfeats, torch.ones_like(v.narrow(1, 2 * nc, self.n_flat))], dim=1)
        cache = [dfeats, self.layout]
        for w_j, d_j in caches:
            for i in range(len(d_j)):
                cache += [w_j[i], d_j[i]]
            cache.append(w_j[-1])
        return params, cache


def conditioner_backward(grad: Tensor, cache: List[Tensor]) -> Tensor:
    """d/dv of ``(grad * conditioner(v)).sum()`` from ``Conditioner.forward_cached``'s cache; ``grad``
    (B, D_out, n_params) -> (B, F). Each MLP reads its group's slice of ``grad`` (its last weight has
    ``D_out * group`` rows); the MLPs' input gradients add up."""
    n_groups, per_net = cache[1].shape[0], cache[1].shape[1]
    batch, n_out = grad.shape[0], grad.shape[1]
    total = grad.narrow(2, 0, 0).reshape(batch, 0)  # placeholder; replaced by the first MLP's
    offset = 0
    for j in range(n_groups):
        base = 2 + j * per_net
        w_last = cache[base + per_net - 1]
        size = w_last.shape[0] // n_out
        g = torch.mm(grad.narrow(2, offset, size).reshape(batch, -1), w_last)
        offset += size
        for i in range(base + per_net - 3, base - 1, -2):  # [W1, cos1, W2, cos2, W3]: cos_j then W_j, backwards
            g = torch.mm(g * cache[i + 1], cache[i])
        total = g if j == 0 else total + g
    return total * cache[0] if cache[0].shape[1] > 0 else total


class CouplingLayer(nn.Module):
    """Transforms ``u[:, out_idx]`` elementwise, conditioned on ``u[:, cond_idx]``.

    Density direction (``forward``, x -> z): applies ``transform.forward`` (the analytic CDF map), or
    ``transform.inverse`` when ``inverted`` (the paper's section 6.4 orientation). ``inverse`` (z -> x)
    does the opposite. Both return the new state (B, D) and log|det| (B,) of the map they applied.
    ``groups``, ``init``, ``zero_last``: the conditioner's MLPs (:class:`Conditioner`).
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
        groups: Optional[List[int]] = None,
        init: str = "default",
        zero_last: bool = True,
    ):
        super().__init__()
        if set(cond_idx) & set(out_idx):
            raise ValueError("a coupling layer cannot condition on the coordinates it transforms")
        self.transform = transform
        self.register_buffer("cond_idx", torch.tensor(cond_idx, dtype=torch.long))
        self.register_buffer("out_idx", torch.tensor(out_idx, dtype=torch.long))
        self.conditioner = Conditioner([circular[i] for i in cond_idx], len(out_idx), transform.n_params, hidden,
                                       groups, init, zero_last)
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
