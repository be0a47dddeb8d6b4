"""Coupling layers: a conditioner network reads one set of unit-box coordinates and outputs the shape
parameters of an elementwise transform applied to another set.

The whole flow state is one tensor ``u`` (B, D) of unit-box coordinates (bonds, angles, torsions side
by side); a layer is described by two index buffers, ``cond_idx`` (what it reads) and ``out_idx`` (what
it transforms). This keeps every layer the same TorchScript type and the architecture a plain list.
"""

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from ..transforms.base import ElementwiseTransform


class Sin(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


class Conditioner(nn.Module):
    """MLP with sin activations: (B, C) unit-box coordinates -> (B, D_out, n_params) raw parameters.

    Circular inputs (``circular`` mask, one bool per input) enter as cos/sin of 2 pi t so the network is
    periodic in them; the others enter as they are. The last layer starts at zero, so every transform
    starts at its ``params == 0`` shape (close to the identity).
    """

    def __init__(self, circular: List[bool], n_out: int, n_params: int, hidden: Tuple[int, ...] = (64, 64)):
        super().__init__()
        circ = torch.tensor(circular, dtype=torch.bool)
        self.register_buffer("circ_idx", torch.nonzero(circ).flatten())
        self.register_buffer("flat_idx", torch.nonzero(~circ).flatten())
        self.n_out = n_out
        self.n_params = n_params
        n_in = 2 * int(circ.sum()) + int((~circ).sum())
        layers: List[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(n_in, width), Sin()]
            n_in = width
        last = nn.Linear(n_in, n_out * n_params)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, cond: Tensor) -> Tensor:
        angle = (2.0 * math.pi) * cond.index_select(1, self.circ_idx)
        features = torch.cat([torch.cos(angle), torch.sin(angle), cond.index_select(1, self.flat_idx)], dim=1)
        return self.net(features).view(cond.shape[0], self.n_out, self.n_params)


class CouplingLayer(nn.Module):
    """Transforms ``u[:, out_idx]`` elementwise, conditioned on ``u[:, cond_idx]``.

    Density direction (``forward``, x -> z): applies ``transform.forward`` (the analytic CDF map), or
    ``transform.inverse`` when ``inverted`` (the paper's section 6.4 orientation). ``inverse`` (z -> x)
    does the opposite. Both return the new state (B, D) and log|det| (B,) of the map they applied.
    """

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

    @torch.jit.unused
    def _inverse_transform(self, x: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        return self.transform.inverse(x, params)

    def _couple(self, u: Tensor, analytic: bool) -> Tuple[Tensor, Tensor]:
        params = self.conditioner(u.index_select(1, self.cond_idx))
        x = u.index_select(1, self.out_idx)
        if analytic:
            y, logdet = self.transform(x, params)
        else:
            y, logdet = self._inverse_transform(x, params)
        return u.index_copy(1, self.out_idx, y), logdet.sum(dim=1)

    def forward(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        return self._couple(u, not self.inverted)

    @torch.jit.unused
    def inverse(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        return self._couple(u, self.inverted)
