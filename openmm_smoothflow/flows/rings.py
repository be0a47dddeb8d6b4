"""Rings: a flat-bottomed restraint on the bonds a Z-matrix leaves out, and exact samples of the
restrained density.

A Z-matrix is a spanning tree of the bond graph: in a ring one bond (PRO CG-CD, PHE CZ-CE2) and the
angles that contain it are not internal coordinates, so no coordinate of the flow's density sees them
and only learned correlations of the ring's other coordinates keep the ring shut.  The generator's
energy therefore carries, next to ``-log q(x)``, the restraint

    R(x) = sum_p  0.5 k ( max(0, lo_p - d_p)^2 + max(0, d_p - hi_p)^2 )      (kT)

over the *restrained pairs* (:func:`ring_restraint_pairs`): every ring-closing bond and every 1-3
distance across one (the angles at its two atoms), ``d_p`` their distances (nm), ``[lo_p, hi_p]`` the
range of the training data (:meth:`RingRestraint.fit`; zero on every training frame, so the NLL of the
data and its gradient are those of q) and ``k = 1e5 kT/nm^2`` (about a bond of the force field).  The
model's density is

    q_R(x) = q(x) exp(-R(x)) / Z_R,        Z_R = E_q[exp(-R)] <= 1,

normalised; the exported energy ``u = -log q + R`` is ``-log q_R - log Z_R``: normalised up to the
constant ``log Z_R``, which :func:`rejection_sample` estimates as the log acceptance rate while it draws
exact samples of q_R (a sample of q is kept with probability ``exp(-R)``).  ESS is unchanged by the
constant; a reverse-KL estimate with the ``log q_R`` returned here includes it.

Until :meth:`RingRestraint.fit` is called the range is ``[0, inf)``: R = 0 and the density is q
(models made before the restraint load that way).  Molecules without rings have no pairs and the
energy is exactly -log q.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..errors import RunFailed
from .zmatrix import ZMatrix

RESTRAINT_KT_NM2 = 1.0e5  # k of the flat-bottomed harmonic, kT/nm^2: 0.01 nm past the range costs 5 kT


def ring_closures(zmatrix: ZMatrix) -> List[Tuple[int, int]]:
    """Bonds of the molecule (``zmatrix.graph_bonds``) that are not Z-matrix bonds, sorted pairs."""
    if zmatrix.graph_bonds is None:
        return []
    tree = {tuple(sorted(b)) for b in zmatrix.bond_atoms}
    return [tuple(sorted(b)) for b in zmatrix.graph_bonds if tuple(sorted(b)) not in tree]


def ring_restraint_pairs(zmatrix: ZMatrix) -> List[Tuple[int, int]]:
    """The restrained atom pairs: each ring-closing bond (a, b), then the 1-3 pairs (c, b) and (a, d)
    of the angles c-a-b and a-b-d through it (c bonded to a, d to b; none of these angles is a Z-matrix
    angle), without repeats, in a deterministic order."""
    closures = ring_closures(zmatrix)
    if not closures:
        return []
    nbrs: Dict[int, List[int]] = {}
    for a, b in zmatrix.graph_bonds or []:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    pairs: List[Tuple[int, int]] = list(closures)
    for a, b in closures:
        for end, other in ((a, b), (b, a)):
            for c in sorted(nbrs[end]):
                pair = tuple(sorted((c, other)))
                if c != other and pair not in pairs:
                    pairs.append(pair)
    return pairs


class RingRestraint(nn.Module):
    """The flat-bottomed restraint R(x) (module docstring) on ``pairs``; scripted with the generator.

    Buffers: ``pairs`` (P, 2) long (from the Z-matrix, not stored), ``lo``, ``hi`` (P,) float64 nm and
    ``k`` () float64 kT/nm^2 (stored in checkpoints and exports when there are pairs; missing in a state
    dict -> kept, R = 0 for a model stored before the restraint existed)."""

    n_pairs: int

    def __init__(self, pairs: Sequence[Tuple[int, int]], k: float = RESTRAINT_KT_NM2) -> None:
        super().__init__()
        self.n_pairs = len(pairs)
        self.register_buffer("pairs", torch.tensor(list(pairs), dtype=torch.long).reshape(-1, 2), persistent=False)
        stored = self.n_pairs > 0  # no entries in the state dicts of molecules without rings
        self.register_buffer("lo", torch.zeros(self.n_pairs, dtype=torch.float64), persistent=stored)
        self.register_buffer("hi", torch.full((self.n_pairs,), math.inf, dtype=torch.float64), persistent=stored)
        self.register_buffer("k", torch.tensor(float(k), dtype=torch.float64), persistent=stored)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("lo", "hi", "k") if self.n_pairs > 0 else ():  # stored before the restraint: R = 0
            state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @torch.jit.unused
    def fit(self, positions: Tensor, margin: float = 0.0) -> "RingRestraint":
        """Set ``[lo, hi]`` to the range of the pairs' distances over ``positions`` (B, N, 3) nm, widened by
        ``margin`` nm on each side."""
        if self.n_pairs == 0:
            return self
        with torch.no_grad():
            x = torch.as_tensor(positions, dtype=torch.float64)
            d = torch.linalg.norm(x[:, self.pairs[:, 0]] - x[:, self.pairs[:, 1]], dim=-1)
            self.lo.copy_((d.min(dim=0).values - margin).clamp(min=0.0))
            self.hi.copy_(d.max(dim=0).values + margin)
        return self

    def distances(self, x: Tensor) -> Tensor:
        """Distances (B, P) nm of the restrained pairs for positions (B, N, 3) nm."""
        diff = x.index_select(1, self.pairs[:, 0]) - x.index_select(1, self.pairs[:, 1])
        return torch.sqrt(torch.sum(diff * diff, dim=-1) + 1e-20)

    def forward_cached(self, x: Tensor, need_cache: bool) -> Tuple[Tensor, List[Tensor]]:
        """R(x) (B,) in kT and, if ``need_cache``, what :meth:`backward` needs (else ``[]``)."""
        diff = x.index_select(1, self.pairs[:, 0]) - x.index_select(1, self.pairs[:, 1])  # (B, P, 3)
        d = torch.sqrt(torch.sum(diff * diff, dim=-1) + 1e-20)
        dt = x.dtype
        excess = torch.clamp(d - self.hi.to(dt), min=0.0) - torch.clamp(self.lo.to(dt) - d, min=0.0)
        k = self.k.to(dt)
        energy = 0.5 * k * torch.sum(excess * excess, dim=1)
        if not need_cache:
            return energy, []
        return energy, [diff, d, excess]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_cached(x, False)[0]

    def backward(self, cache: List[Tensor], n_atoms: int) -> Tensor:
        """Gradient (B, N, 3) of R w.r.t. the positions, from ``forward_cached(x, True)``'s cache."""
        diff, d, excess = cache
        g = (self.k.to(d.dtype) * excess / d).unsqueeze(-1) * diff  # dR/dx_a; dR/dx_b = -g
        grad = torch.zeros(diff.shape[0], n_atoms, 3, dtype=diff.dtype, device=diff.device)
        return grad.index_add(1, self.pairs[:, 0], g).index_add(1, self.pairs[:, 1], -g)


def rejection_sample(sample: Callable[[int], Tuple[Tensor, Tensor]], restraint: RingRestraint, n: int,
                     generator: Optional[torch.Generator] = None, batch_size: int = 4096,
                     max_draws: Optional[int] = None) -> Tuple[Tensor, Tensor, Dict[str, float]]:
    """Exact samples of q_R = q exp(-R) / Z_R: draws of ``sample(m) -> (x (m, N, 3), log q (m,))`` kept with
    probability exp(-R(x)).

    Returns positions (n, N, 3) nm, ``log q_R`` (n,) = log q - R - log Z_R with ``log Z_R`` estimated from
    every draw made here, and ``{"acceptance", "log_z", "log_z_se", "draws"}`` (``log_z_se``: the
    standard error of the log Z_R estimate). ``RunFailed`` if ``max_draws`` (default ``200 * n``) draws
    give fewer than n samples (the unrestrained flow almost never closes the rings)."""
    max_draws = 200 * n if max_draws is None else int(max_draws)
    xs: List[Tensor] = []
    lqs: List[Tensor] = []
    kept, drawn = 0, 0
    while kept < n:
        if drawn >= max_draws:
            raise RunFailed(f"ring restraint: only {kept} of {drawn} flow samples accepted (exp(-R) test); "
                            f"the flow does not keep its rings closed -- train longer or check the data")
        rate = max(kept / drawn, 1e-3) if drawn else 1.0
        m = int(min(batch_size, max_draws - drawn, max(16, math.ceil(1.2 * (n - kept) / rate))))
        x, log_q = sample(m)
        with torch.no_grad():
            r = restraint(x)
            u = torch.rand(m, generator=generator, dtype=r.dtype, device=r.device)
            keep = u < torch.exp(-r)
        xs.append(x[keep])
        lqs.append(log_q[keep] - r[keep])
        kept += int(keep.sum())
        drawn += m
    acceptance = kept / drawn
    log_z = math.log(acceptance)
    info = {"acceptance": acceptance, "log_z": log_z,
            "log_z_se": math.sqrt(max(1.0 - acceptance, 0.0) / kept), "draws": float(drawn)}
    return torch.cat(xs)[:n], torch.cat(lqs)[:n] - log_z, info
