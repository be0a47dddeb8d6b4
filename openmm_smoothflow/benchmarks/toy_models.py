"""The 2-D toy problems of the paper (SI-2.1): energies, Metropolis-Hastings data, a small flow on the
unit box built from the library's transforms and coupling layers, and its maximum-likelihood training.
``toy.py`` runs the benchmark on them."""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

BOX = (-math.pi, math.pi)
ALPHAS = (1.0, 0.8, 0.6, 0.4)
RADII = (1.0, 2.0, 1.5, 2.5)
PROBLEMS = {
    "rings": dict(periodic=False, sigma=0.06),
    "torus": dict(periodic=True, sigma=0.05),
}
KINDS = ("spline", "smooth")  # the flows compared (a subset of flows.generator.KINDS), in run order


# --------------------------------------------------------------------------------------------- energies
class RingEnergy(nn.Module):
    """``u(x) = -log sum_i alpha_i exp(-(beta(x) - r_i)^2 / (2 sigma^2))`` in kT, x (B, 2) -> (B,).

    ``beta(x) = |x|_2`` (``periodic=False``, Eq. 84) or ``(cos x1 + cos x2 + 2)^(1/2)`` (``periodic=True``,
    our periodic reading of Eqs. 85-86; see the module docstring). ``box`` is the square (lo, hi) in each
    dimension the problem lives on (the torus when periodic).
    """

    def __init__(self, periodic: bool = False, sigma: float = 0.06, radii: Sequence[float] = RADII,
                 alphas: Sequence[float] = ALPHAS, box: Tuple[float, float] = BOX) -> None:
        super().__init__()
        if len(radii) != len(alphas):
            raise ValueError("radii and alphas must have the same length")
        self.periodic = bool(periodic)
        self.sigma = float(sigma)
        self.box = (float(box[0]), float(box[1]))
        self.register_buffer("radii", torch.tensor(radii, dtype=torch.float64))
        self.register_buffer("log_alphas", torch.log(torch.tensor(alphas, dtype=torch.float64)))

    def ring_coordinate(self, x: Tensor) -> Tensor:
        """``beta(x)`` (B,); the sqrt argument is floored at 1e-12 (finite gradients at its zero)."""
        if self.periodic:
            arg = torch.cos(x[:, 0]) + torch.cos(x[:, 1]) + 2.0
        else:
            arg = x[:, 0] ** 2 + x[:, 1] ** 2
        return torch.sqrt(arg.clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        beta = self.ring_coordinate(x).unsqueeze(-1)
        r, la = self.radii.to(x.dtype), self.log_alphas.to(x.dtype)
        return -torch.logsumexp(la - (beta - r) ** 2 / (2.0 * self.sigma ** 2), dim=-1)

    def force(self, x: Tensor) -> Tensor:
        """``-grad u`` (B, 2) by autograd."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return -torch.autograd.grad(self(x).sum(), x)[0]

    def log_partition(self, n_grid: int = 800) -> float:
        """``log Z = log int_box exp(-u)`` by the midpoint rule on an ``n_grid``^2 grid (float64)."""
        x, cell = grid_points(n_grid, self.box, dtype=torch.float64)
        with torch.no_grad():
            return float(torch.logsumexp(-self(x), 0) + math.log(cell))


def make_energy(problem: str) -> RingEnergy:
    """The energy of ``problem`` ("rings" or "torus")."""
    return RingEnergy(**PROBLEMS[problem])


def grid_points(n: int, box: Tuple[float, float] = BOX, dtype: torch.dtype = torch.float32,
                nodes: bool = False) -> Tuple[Tensor, float]:
    """Cell centres (or, with ``nodes``, the n x n points ``linspace(lo, hi, n)`` per axis, as
    ``plots.force_field_2d`` places arrows) of an n x n grid over ``box``^2 as (n * n, 2), row-major in
    y (index ``iy * n + ix``), and the cell area."""
    h = (box[1] - box[0]) / n
    if nodes:
        c = torch.linspace(box[0], box[1], n, dtype=dtype)
    else:
        c = box[0] + h * (torch.arange(n, dtype=dtype) + 0.5)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), h * h


# ------------------------------------------------------------------------------------------ sampling
def metropolis_hastings(energy: Callable[[Tensor], Tensor], x0: Tensor, n_burnin: int, n_record: int = 1,
                        step_sizes: Sequence[float] = (0.1,), box: Optional[Tuple[float, float]] = None,
                        periodic: bool = False, generator: Optional[torch.Generator] = None,
                        progress: bool = False) -> Tuple[Tensor, float]:
    """Vectorised Metropolis-Hastings: one chain per row of ``x0`` (C, D).

    Runs ``n_burnin`` steps, then ``n_record`` more, recording the state after each of those; returns
    the samples (n_record * C, D) (record-major) and the acceptance rate over all steps. Proposals are
    ``x + s N(0, 1)`` with ``s`` drawn uniformly from ``step_sizes`` per chain and step (a symmetric
    mixture). With ``box`` (lo, hi): non-periodic proposals outside the box are rejected, periodic ones
    wrapped into [lo, hi).
    """
    x = x0.clone()
    with torch.no_grad():
        u = energy(x)
        steps = torch.tensor(step_sizes, dtype=x.dtype)
        records: List[Tensor] = []
        accepted = 0
        total = n_burnin + n_record
        iterator = range(total)
        if progress:
            from ..progress import progress_bar

            iterator = progress_bar(iterator, desc="Metropolis-Hastings", unit="step", leave=False)
        for i in iterator:
            s = steps[torch.randint(len(step_sizes), (x.shape[0], 1), generator=generator)]
            y = x + s * torch.randn(x.shape, generator=generator, dtype=x.dtype)
            inside = torch.ones(x.shape[0], dtype=torch.bool)
            if box is not None:
                lo, hi = box
                if periodic:
                    y = lo + torch.remainder(y - lo, hi - lo)
                else:
                    inside = ((y >= lo) & (y <= hi)).all(dim=1)
            uy = energy(y)
            log_r = torch.rand(x.shape[0], generator=generator, dtype=x.dtype).log()
            accept = inside & (log_r < (u - uy))
            x = torch.where(accept.unsqueeze(1), y, x)
            u = torch.where(accept, uy, u)
            accepted += int(accept.sum())
            if i >= n_burnin:
                records.append(x.clone())
    return torch.cat(records, dim=0), accepted / (total * x.shape[0])


def sample_problem(energy: RingEnergy, n_side: int = 100, n_burnin: int = 1000, n_record: int = 10,
                   step_sizes: Sequence[float] = (0.05, 0.2, 1.0), seed: int = 0,
                   progress: bool = False) -> Tuple[Tensor, float]:
    """Paper-style data: ``n_side``^2 chains from a regular grid over the box -> (n_record * n_side^2, 2)
    float32 samples and the acceptance rate."""
    x0, _ = grid_points(n_side, energy.box, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    data, acc = metropolis_hastings(energy, x0, n_burnin, n_record, step_sizes, box=energy.box,
                                    periodic=energy.periodic, generator=gen, progress=progress)
    return data.float(), acc


# ----------------------------------------------------------------------------------------------- flow
class ToyFlow(nn.Module):
    """A 2-D flow: box -> unit square (or torus) -> ``n_layers`` coupling layers -> uniform base.

    ``kind``: a flow kind of the library (``flows.generator.make_transform``): "smooth" (``BumpMixture``,
    C^infinity) or "spline" (``RationalQuadraticSpline``, C^1), each with ``n_components`` components /
    bins, or "affine"; circular transforms and conditioner inputs when ``periodic``. Layer k transforms dimension k % 2 conditioned on the other. Density direction
    ``forward(x)`` (B, 2) -> (z (B, 2) in [0, 1)^2, log|det dz/dx| (B,)); ``x`` must lie in the box
    (wrapped onto it when periodic).
    """

    def __init__(self, kind: str = "smooth", periodic: bool = False, n_layers: int = 4,
                 n_components: int = 16, hidden: Tuple[int, ...] = (64, 64),
                 box: Tuple[float, float] = BOX) -> None:
        super().__init__()
        from ..flows.coupling import CouplingLayer
        from ..flows.generator import make_transform

        self.kind = kind
        self.periodic = bool(periodic)
        self.box = (float(box[0]), float(box[1]))
        self.width = self.box[1] - self.box[0]
        self.box_logdet = -2.0 * math.log(self.width)  # log|det d(unit)/dx|, constant

        self.layers = nn.ModuleList(
            CouplingLayer(make_transform(kind, self.periodic, n_components), cond_idx=[1 - k % 2],
                          out_idx=[k % 2], circular=[self.periodic] * 2, hidden=tuple(hidden))
            for k in range(n_layers))

    def to_unit(self, x: Tensor) -> Tensor:
        u = (x - self.box[0]) / self.width
        return u - torch.floor(u) if self.periodic else u

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        u = self.to_unit(x)
        logdet = torch.full(x.shape[:1], self.box_logdet, dtype=x.dtype, device=x.device)
        for layer in self.layers:
            u, ld = layer(u)
            logdet = logdet + ld
        return u, logdet

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` (B,): the uniform base on [0, 1]^2 has log density 0."""
        return self(x)[1]

    def energy(self, x: Tensor) -> Tensor:
        """``-log p(x)`` in kT (B,)."""
        return -self.log_prob(x)

    def force(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """``grad log p(x)`` (B, 2) by autograd."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.log_prob(x).sum(), x, create_graph=create_graph)[0]

    @torch.no_grad()
    def inverse(self, z: Tensor) -> Tensor:
        """``x`` (B, 2) in the box from ``z`` (B, 2) in [0, 1]^2: the layers' inverses (root finding for
        bumps, analytic for splines)."""
        u = z
        for layer in reversed(self.layers):
            u = layer.inverse(u)[0]
        return self.box[0] + self.width * u

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` samples (n, 2): uniform ``z`` through ``inverse``."""
        dtype = next(self.parameters()).dtype
        return self.inverse(torch.rand(n, 2, generator=generator, dtype=dtype))


# ------------------------------------------------------------------------------------------- training
def train_nll(flow: ToyFlow, data: Tensor, n_iter: int, batch_size: int = 512, lr: float = 5e-4,
              seed: int = 0, progress: bool = True, desc: str = "train") -> List[float]:
    """Maximum likelihood with Adam: ``n_iter`` steps on random batches of ``data`` (N, 2); returns the
    per-step batch NLL (nats)."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    losses: List[float] = []
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=n_iter, desc=desc, unit="step", leave=False)
    for it in range(n_iter):
        batch = data[torch.randint(len(data), (batch_size,), generator=gen)]
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            if it % 25 == 0 or it == n_iter - 1:
                bar.set_postfix(nll=f"{sum(losses[-25:]) / len(losses[-25:]):.3f}")
    if bar is not None:
        bar.close()
    return losses


def mean_nll(flow: ToyFlow, data: Tensor, chunk: int = 16384) -> float:
    """Mean ``-log p`` over ``data`` (nats), in chunks without autograd."""
    with torch.no_grad():
        total = sum(float(-flow.log_prob(data[i:i + chunk]).sum()) for i in range(0, len(data), chunk))
    return total / len(data)


def reference_nll(energy: RingEnergy, data: Tensor, n_grid: int = 800) -> float:
    """Exact ``<u> + log Z`` on ``data``: the NLL of the true (box-restricted) density."""
    with torch.no_grad():
        return float(energy(data.double()).mean()) + energy.log_partition(n_grid)
