"""Internal-coordinate (IC) transform and the unit-box map of the ICs.

:class:`InternalCoordinates` maps Cartesian positions (B, N, 3) in nm to the bonds, angles and torsions
of a :class:`~openmm_smoothflow.flows.zmatrix.ZMatrix` (ordering documented there) plus the log
Jacobian; :class:`UnitBox` maps those ICs linearly onto [0, 1].  Both forwards are TorchScript-able.

Frame convention.  The first three atoms ``(i0, i1, i2)`` of the Z-matrix fix the global frame: the
frame ICs are ``r01 = |x1 - x0|``, ``r02 = |x2 - x0|`` (bonds 0, 1) and ``theta_102`` = angle(1, 0, 2)
(angle 0).  The inverse puts atom ``i0`` at the origin, ``i1`` on +x and ``i2`` in the xy-plane, y > 0.

Log-determinant convention.  ``forward`` returns ``logdet`` such that the energy of the Cartesian
density (translations and rotations quotiented out) is ``u(x) = -log p_ic(ic(x)) - logdet(x)``.  The
Cartesian volume element is ``d^3t * r01^2 dr01 dOmega * r02^2 sin(theta_102) dr02 dtheta dpsi *
prod_rows r^2 sin(theta) dr dtheta dphi`` (``dOmega dpsi``: rotation measure, ``d^3t``: translation),
hence::

    logdet = -( sum_{all bonds} 2 log r + sum_{all angles} log sin(theta) )

with the 2 frame bonds, the frame angle and every row's bond and angle.  ``inverse`` returns the
negative of it (``log|det dx/dic|``).  Relative to the 3N-6 *frame coordinates* (x1; x2, y2; all
other atoms, as produced by ``inverse``) one has ``log|det d(ic)/d(frame)| = logdet + log(r01^2 y2)``
with ``y2 = r02 sin(theta_102)`` (the rotation-orbit factor; derivation in tests/flows/test_ic.py).

Regularisation (never NaN/inf).  Bond lengths are ``sqrt(|d|^2 + 1e-20 nm^2)``; angles are
``atan2(sqrt(|a x b|^2 + 1e-20), a.b)`` (well defined and differentiable up to and including pi);
``log sin(theta)`` is evaluated as ``0.5 log(sin^2 theta + 1e-12)``, i.e. sin clamped softly at 1e-6,
so the Jacobian energy of an exactly linear angle is finite (about 13.8 kT per angle) with a bounded
force.  A torsion is undefined when one of its two angles is linear (or atoms coincide): then both
atan2 arguments vanish and the torsion is set to 0 with zero gradient (double-``where``); close to that
point the torsion gradient grows like 1/sin(theta), as it geometrically must, but stays finite.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .zmatrix import ZMatrix, backbone_dihedrals, torsion_indices, zmatrix_from_topology  # noqa: F401

__all__ = ["InternalCoordinates", "UnitBox", "ZMatrix", "zmatrix_from_topology", "torsion_indices",
           "backbone_dihedrals", "log_sin"]

# Regularisation constants (literals are repeated in scripted code, which cannot read globals):
# 1e-20 nm^2 (nm^4 for cross products) inside square roots; 1e-12 added to sin^2(theta) inside the log;
# torsion atan2 arguments (y, x) with y^2 + x^2 <= 1e-30 are degenerate.
_EPS_NORM = 1e-20

Range = Union[Tuple[float, float], Sequence[float]]


def log_sin(theta: Tensor) -> Tensor:
    """Regularised ``log sin(theta)`` = ``0.5 log(sin^2 theta + 1e-12)`` used in every log-Jacobian."""
    s = torch.sin(theta)
    return 0.5 * torch.log(s * s + 1e-12)


def _range_buffer(rng, n: int, name: str) -> Tuple[Tensor, Tensor]:
    lo = torch.as_tensor(rng[0], dtype=torch.float64).expand(n).clone()
    hi = torch.as_tensor(rng[1], dtype=torch.float64).expand(n).clone()
    if not bool((hi > lo).all()):
        raise ValueError(f"{name} range must have hi > lo, got {rng}")
    return lo, hi


class UnitBox(nn.Module):
    """Fixed linear maps of the ICs onto the unit box (scripted forward and inverse).

    ``forward(bonds, angles, torsions) -> (ub, ua, ut, logdet)``: ``ub = (b - lo_b)/(hi_b - lo_b)``,
    ``ua = (a - lo_a)/(hi_a - lo_a)``, ``ut = ((t + pi)/(2 pi)) mod 1`` in [0, 1) (circular); logdet (B,)
    = ``-sum log(hi_b - lo_b) - sum log(hi_a - lo_a) - n_t log(2 pi)`` (constant).  Values outside the
    ranges map outside [0, 1] (no clamping here).  ``inverse(ub, ua, ut) -> (b, a, t, -logdet)`` with
    torsions in [-pi, pi).  Ranges are float64 buffers ``bond_lo, bond_hi, angle_lo, angle_hi`` (one
    value per coordinate, so exported models carry them); computations run in the input dtype.
    """

    def __init__(self, n_bonds: int, n_angles: int, n_torsions: int,
                 bond_range: Range = (0.05, 0.3), angle_range: Range = (0.15 * math.pi, math.pi)) -> None:
        super().__init__()
        self.n_bonds, self.n_angles, self.n_torsions = int(n_bonds), int(n_angles), int(n_torsions)
        blo, bhi = _range_buffer(bond_range, self.n_bonds, "bond")
        alo, ahi = _range_buffer(angle_range, self.n_angles, "angle")
        self.register_buffer("bond_lo", blo)
        self.register_buffer("bond_hi", bhi)
        self.register_buffer("angle_lo", alo)
        self.register_buffer("angle_hi", ahi)

    def _logdet(self, ref: Tensor) -> Tensor:
        ld = -(torch.log(self.bond_hi - self.bond_lo).sum() + torch.log(self.angle_hi - self.angle_lo).sum()
               + self.n_torsions * math.log(2 * math.pi))
        return ld.to(ref.dtype).expand(ref.shape[0])

    def forward(self, bonds: Tensor, angles: Tensor, torsions: Tensor
                ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        dt = bonds.dtype
        blo = self.bond_lo.to(dt)
        alo = self.angle_lo.to(dt)
        ub = (bonds - blo) / (self.bond_hi.to(dt) - blo)
        ua = (angles - alo) / (self.angle_hi.to(dt) - alo)
        ut = torch.remainder((torsions + math.pi) / (2 * math.pi), 1.0)
        return ub, ua, ut, self._logdet(bonds)

    def backward(self, grad_ub: Tensor, grad_ua: Tensor, grad_ut: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Cotangents of ``forward``'s (ub, ua, ut) -> of (bonds, angles, torsions) (its derivatives)."""
        dt = grad_ub.dtype
        return (grad_ub / (self.bond_hi.to(dt) - self.bond_lo.to(dt)),
                grad_ua / (self.angle_hi.to(dt) - self.angle_lo.to(dt)), grad_ut * (1.0 / (2 * math.pi)))

    @torch.jit.export
    def inverse(self, ub: Tensor, ua: Tensor, ut: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        dt = ub.dtype
        blo = self.bond_lo.to(dt)
        alo = self.angle_lo.to(dt)
        bonds = ub * (self.bond_hi.to(dt) - blo) + blo
        angles = ua * (self.angle_hi.to(dt) - alo) + alo
        torsions = ut * (2 * math.pi) - math.pi
        return bonds, angles, torsions, -self._logdet(ub)


class InternalCoordinates(nn.Module):
    """Cartesian positions <-> internal coordinates of a Z-matrix (see the module docstring).

    ``forward(x)``: x (B, N, 3) nm -> ``(bonds (B, R+2) nm, angles (B, R+1) rad in [0, pi],
    torsions (B, R) rad in (-pi, pi], logdet (B,))``; vectorised over atoms with one gather, scripted.
    ``inverse(bonds, angles, torsions)`` -> ``(x (B, N, 3), logdet (B,))`` in the fixed global frame,
    ``logdet = log|det dx/dic| = -forward logdet``; rows of equal placement depth are placed together
    (eager only; ``torch.jit.unused``).  ``self.unit_box`` is the :class:`UnitBox` with the given
    ``bond_range`` / ``angle_range`` (nm, rad).
    """

    def __init__(self, zmatrix: ZMatrix, bond_range: Range = (0.05, 0.3),
                 angle_range: Range = (0.15 * math.pi, math.pi)) -> None:
        super().__init__()
        if not isinstance(zmatrix, ZMatrix):
            raise TypeError(f"expected a ZMatrix, got {type(zmatrix).__name__}")
        self.zmatrix = zmatrix
        self.n_atoms = zmatrix.n_atoms
        self.n_rows = zmatrix.n_rows
        self.n_bonds, self.n_angles, self.n_torsions = zmatrix.n_bonds, zmatrix.n_angles, zmatrix.n_torsions
        i0, i1, i2 = zmatrix.frame
        # Pseudo-row (i1, i0, i2, i2) for the frame, then the rows: d = x[a] - x[b] for consecutive
        # atoms gives the bond (d0), the frame's second bond / a row's bond-angle arm (d1) and d2.
        quads = [(i1, i0, i2, i2)] + list(zmatrix.rows)
        self.register_buffer("gather_index", torch.tensor(quads, dtype=torch.long).reshape(-1))
        # bonds among the (B, R+1, 2) arm lengths |d0|, |d1|: the frame's two, then each row's |d0|
        bond_index = [0, 1] + [2 * row for row in range(1, self.n_rows + 1)]
        self.register_buffer("bond_index", torch.tensor(bond_index, dtype=torch.long), persistent=False)
        self.unit_box = UnitBox(self.n_bonds, self.n_angles, self.n_torsions, bond_range, angle_range)
        # Inverse: rows sorted by placement depth, placed level by level.
        levels = zmatrix.row_levels()
        perm = sorted(range(self.n_rows), key=lambda r: (levels[r], r))
        rows = torch.tensor([zmatrix.rows[r] for r in perm], dtype=torch.long).reshape(-1, 4)
        self.register_buffer("inv_rows", torch.tensor(perm, dtype=torch.long))
        self.register_buffer("inv_atoms", rows)
        self.register_buffer("frame_index", torch.tensor([i0, i1, i2], dtype=torch.long))
        self._level_slices = []
        start = 0
        for lev in sorted(set(levels)):
            n = sum(1 for v in levels if v == lev)
            self._level_slices.append((start, start + n))
            start += n

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, bonds={self.n_bonds}, angles={self.n_angles}, torsions={self.n_torsions}"

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        bonds, angles, torsions, logdet, _ = self.forward_cached(x, False)
        return bonds, angles, torsions, logdet

    def forward_cached(self, x: Tensor, need_cache: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, List[Tensor]]:
        """``forward`` and, if ``need_cache``, the intermediates :meth:`backward` needs (else ``[]``)."""
        b = x.shape[0]
        g = x.index_select(1, self.gather_index).view(b, self.n_rows + 1, 4, 3)
        d = g[:, :, :3] - g[:, :, 1:]                                    # (B, R+1, 3, 3): d0, d1, d2
        d01 = d[:, :, :2]
        r = torch.sqrt(torch.sum(d01 * d01, dim=-1) + 1e-20)              # (B, R+1, 2)
        n = torch.linalg.cross(d01, d[:, :, 1:], dim=-1)                   # n0 = d0 x d1, n1 = d1 x d2
        d0, d1 = d[:, :, 0], d[:, :, 1]
        n0, n1 = n[:, :, 0], n[:, :, 1]
        # angle(i, j, k) between d0 = x_i - x_j and -d1 = x_k - x_j
        sin_part = torch.sqrt(torch.sum(n0 * n0, dim=-1) + 1e-20)
        cos_part = -torch.sum(d0 * d1, dim=-1)
        angles = torch.atan2(sin_part, cos_part)
        bonds = r.flatten(1).index_select(1, self.bond_index)          # r01, r02, then each row's bond
        # dihedral(i, j, k, l) with b1 = -d0, b2 = -d1, b3 = -d2 (mdtraj's formula); the frame
        # pseudo-row (d2 = 0) gets tx = ty = 0, i.e. the degenerate branch, and is dropped
        d0n1 = torch.sum(d0 * n1, dim=-1)
        ty = -d0n1 * r[:, :, 1]
        tx = torch.sum(n1 * n0, dim=-1)
        ok = tx * tx + ty * ty > 1e-30
        t = torch.atan2(torch.where(ok, ty, torch.zeros_like(ty)), torch.where(ok, tx, torch.ones_like(tx)))
        torsions = torch.where(t <= -math.pi, t + 2 * math.pi, t)[:, 1:]
        logdet = -(2.0 * torch.log(bonds).sum(dim=1) + log_sin(angles).sum(dim=1))
        if not need_cache:
            return bonds, angles, torsions, logdet, []
        return bonds, angles, torsions, logdet, [d, r, n, sin_part, cos_part, d0n1, tx, ty, ok, bonds, angles]

    def backward(self, grad_bonds: Tensor, grad_angles: Tensor, grad_torsions: Tensor, grad_logdet: float,
                 cache: List[Tensor]) -> Tensor:
        """The gradient w.r.t. the positions (B, N, 3) of ``sum(grad_bonds * bonds) + ... + grad_logdet *
        logdet`` (the derivatives of ``forward``, written out; no autograd), from the cache of
        ``forward_cached(x, True)``."""
        d, r, n, sin_part, cos_part, d0n1, tx, ty, ok, bonds, angles = cache
        b = d.shape[0]
        d0, d1 = d[:, :, 0], d[:, :, 1]
        n0, n1 = n[:, :, 0], n[:, :, 1]
        # log-Jacobian: d(-logdet)/d bond = 2 / r, d(-logdet)/d angle = sin cos / (sin^2 + 1e-12)
        sin_a = torch.sin(angles)
        grad_bonds = grad_bonds - grad_logdet * (2.0 / bonds)
        grad_angles = grad_angles - grad_logdet * (sin_a * torch.cos(angles) / (sin_a * sin_a + 1e-12))
        grad_r = torch.zeros_like(r).flatten(1).index_copy(1, self.bond_index, grad_bonds).view(r.shape)
        # torsion t = atan2(ty, tx) (0 with zero gradient where degenerate), ty = -(d0 . n1) |d1|, tx = n1 . n0
        grad_t = torch.cat([torch.zeros_like(grad_torsions[:, :1]), grad_torsions], dim=1)
        grad_t = torch.where(ok, grad_t / torch.where(ok, tx * tx + ty * ty, torch.ones_like(tx)), torch.zeros_like(tx))
        grad_ty, grad_tx = grad_t * tx, -grad_t * ty
        grad_r = grad_r - torch.stack([torch.zeros_like(d0n1), grad_ty * d0n1], dim=-1)
        grad_d0n1 = -grad_ty * r[:, :, 1]
        # angle = atan2(s, c), s = |n0| (regularised), c = -(d0 . d1)
        inv = grad_angles / (sin_part * sin_part + cos_part * cos_part)
        grad_s, grad_c = inv * cos_part, -inv * sin_part
        # cotangents of n = [n0, n1] and of d = [d0, d1, d2] (B, R+1, k, 3)
        grad_n = torch.stack([(grad_s / sin_part).unsqueeze(-1) * n0, grad_d0n1.unsqueeze(-1) * d0], dim=2) \
            + grad_tx.unsqueeze(-1).unsqueeze(-1) * n.flip(2)
        d01 = d[:, :, :2]
        grad_d01 = (grad_r / r).unsqueeze(-1) * d01 - grad_c.unsqueeze(-1).unsqueeze(-1) * d01.flip(2)
        grad_d01 = grad_d01 + torch.stack([grad_d0n1.unsqueeze(-1) * n1, torch.zeros_like(n1)], dim=2)
        # n = d01 x d12: d(g . (a x b))/da = b x g, d/db = g x a
        grad_d = F.pad(grad_d01 + torch.linalg.cross(d[:, :, 1:], grad_n, dim=-1), (0, 0, 0, 1)) \
            + F.pad(torch.linalg.cross(grad_n, d01, dim=-1), (0, 0, 1, 0))
        # d = [x_i - x_j, x_j - x_k, x_k - x_l] for the gathered atoms (i, j, k, l)
        grad_g = F.pad(grad_d, (0, 0, 0, 1)) - F.pad(grad_d, (0, 0, 1, 0))
        grad_x = torch.zeros(b, self.n_atoms, 3, dtype=d.dtype, device=d.device)
        return grad_x.index_add(1, self.gather_index, grad_g.view(b, -1, 3))

    @torch.jit.unused
    def inverse(self, bonds: Tensor, angles: Tensor, torsions: Tensor) -> Tuple[Tensor, Tensor]:
        bsz = bonds.shape[0]
        zero = torch.zeros_like(bonds[:, 0])
        r01, r02, th = bonds[:, 0], bonds[:, 1], angles[:, 0]
        x1 = torch.stack([r01, zero, zero], dim=-1)
        x2 = torch.stack([r02 * torch.cos(th), r02 * torch.sin(th), zero], dim=-1)
        x = torch.zeros(bsz, self.n_atoms, 3, dtype=bonds.dtype, device=bonds.device)
        x = x.index_copy(1, self.frame_index[1:], torch.stack([x1, x2], dim=1))
        for s, e in self._level_slices:
            rows = self.inv_rows[s:e]
            i, j, k, l = self.inv_atoms[s:e].unbind(1)
            bl = bonds[:, 2 + rows, None]
            ct, st = torch.cos(angles[:, 1 + rows, None]), torch.sin(angles[:, 1 + rows, None])
            cp, sp = torch.cos(torsions[:, rows, None]), torch.sin(torsions[:, rows, None])
            xj, xk, xl = x[:, j], x[:, k], x[:, l]
            bc = xj - xk
            bc = bc / torch.sqrt(torch.sum(bc * bc, dim=-1, keepdim=True) + _EPS_NORM)
            nv = torch.linalg.cross(xk - xl, bc, dim=-1)
            nv = nv / torch.sqrt(torch.sum(nv * nv, dim=-1, keepdim=True) + _EPS_NORM)
            mv = torch.linalg.cross(nv, bc, dim=-1)
            xi = xj + bl * (-ct * bc + st * cp * mv + st * sp * nv)
            x = x.index_copy(1, i, xi)
        logdet = 2.0 * torch.log(bonds).sum(dim=1) + log_sin(angles).sum(dim=1)
        return x, logdet
