"""Multi-bin bisection (SI-1.4) and exact implicit gradients of the inverse (Eqs. 8-11).

``multibin_bisection`` inverts an elementwise increasing ``fn`` on a bracket; ``implicit_inverse`` /
``rootfind_inverse`` attach gradients of every order through the inverse function theorem:

    dx/dy = 1 / f'(x)                          (Eq. 8)
    dx/dtheta = -(df/dtheta)(x) / f'(x)        (Eq. 9)

and the log-derivative of the inverse, ``-log f'(x)``, is computed with the ordinary differentiable
forward at the returned x, so Eqs. 10-11 follow by the chain rule. Gradients w.r.t. conditioner
inputs flow through ``params``.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


def multibin_bisection(fn: Callable[[Tensor], Tensor], y: Tensor, lower: float = 0.0, upper: float = 1.0,
                       n_bins: int = 100, tol: float = 1e-6, max_iter: int = 100,
                       xtol: float = 0.0, stats: Optional[dict] = None) -> Tensor:
    """Solve ``fn(x) = y`` elementwise for ``x`` in ``[lower, upper]``; no autograd (use
    ``implicit_inverse`` for gradients).

    ``y``: any shape S. ``fn`` maps candidates of shape S + (M,) to values of the same shape (M points
    per element, all evaluated in ONE call; each element's ``fn`` must be increasing on the bracket).

    Each iteration evaluates ``n_bins - 1`` interior grid points of every element's bracket plus one
    regula-falsi point (linear interpolation of the bracket ends), keeps the bin that contains the root
    and tightens it with the interpolation point. ``n_bins = 2`` is plain bisection (plus the
    interpolation point). The returned x is the interpolation point; the loop stops when every element
    has ``|fn(x) - y| <= tol`` (and, if ``xtol > 0``, a bracket no wider than ``xtol``), when the
    brackets stop shrinking at the dtype's resolution, or after ``max_iter`` iterations. ``y`` outside
    ``[fn(lower), fn(upper)]`` gives the nearer end. If ``stats`` is a dict, ``stats["iterations"]``
    and ``stats["evaluations"]`` (calls of ``fn``) are set.

    Precision: in float64 the default ``tol = 1e-6`` is always reached (typically the residual is far
    smaller); ``tol`` down to ~1e-13 works. In float32 the residual cannot go below roughly
    ``1e-7 * max(1, f'(x))`` (rounding of x and of f); with ``tol`` smaller than that the loop ends at
    the bracket resolution (~1e-7 wide), so use ``tol >= 1e-6`` (or ``1e-5`` for steep f) in float32.
    """
    if n_bins < 2:
        raise ValueError("n_bins must be >= 2")
    if stats is not None:
        stats["iterations"], stats["evaluations"] = 0, 1
    y = y.detach()
    eps = torch.finfo(y.dtype).eps
    frac = torch.arange(0, n_bins + 1, dtype=y.dtype, device=y.device) / n_bins
    lo = torch.full_like(y, lower)
    hi = torch.full_like(y, upper)
    # iteration 0: the full grid including both ends (K + 1 points)
    pts = lo.unsqueeze(-1) + (hi - lo).unsqueeze(-1) * frac
    vals = fn(pts)
    flo, fhi = vals[..., 0], vals[..., -1]
    lo, hi, flo, fhi = _select(pts, vals, y, lo, hi, flo, fhi, n_bins)
    inner = frac[1:-1]
    for it in range(max_iter):
        if stats is not None:
            stats["iterations"] = it + 1
            stats["evaluations"] = it + 2
        width = hi - lo
        xhat = _interpolate(y, lo, width, flo, fhi)
        pts = torch.cat([lo.unsqueeze(-1) + width.unsqueeze(-1) * inner, xhat.unsqueeze(-1)], dim=-1)
        vals = fn(pts)
        fhat = vals[..., -1]
        ok = (fhat - y).abs() <= tol
        if xtol > 0.0:
            ok = ok & (width <= xtol)
        if bool(ok.all()) or not bool((width > 4.0 * eps * torch.clamp(hi.abs(), min=1.0)).any()):
            return xhat
        full_pts = torch.cat([lo.unsqueeze(-1), pts[..., :-1], hi.unsqueeze(-1)], dim=-1)
        full_vals = torch.cat([flo.unsqueeze(-1), vals[..., :-1], fhi.unsqueeze(-1)], dim=-1)
        lo, hi, flo, fhi = _select(full_pts, full_vals, y, lo, hi, flo, fhi, n_bins)
        # tighten with the interpolation point where it falls inside the chosen bin
        left = fhat < y
        move_lo = left & (xhat > lo)
        move_hi = (~left) & (xhat < hi)
        lo = torch.where(move_lo, xhat, lo)
        flo = torch.where(move_lo, fhat, flo)
        hi = torch.where(move_hi, xhat, hi)
        fhi = torch.where(move_hi, fhat, fhi)
    return _interpolate(y, lo, hi - lo, flo, fhi)


def _select(pts: Tensor, vals: Tensor, y: Tensor, lo: Tensor, hi: Tensor, flo: Tensor, fhi: Tensor,
            n_bins: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keep the bin ``[pts_j, pts_{j+1}]`` with ``vals_j < y <= vals_{j+1}`` (pts/vals: S + (K + 1,))."""
    j = (vals[..., 1:-1] < y.unsqueeze(-1)).sum(-1, keepdim=True)  # in [0, K - 1]
    j1 = j + 1
    return (pts.gather(-1, j).squeeze(-1), pts.gather(-1, j1).squeeze(-1),
            vals.gather(-1, j).squeeze(-1), vals.gather(-1, j1).squeeze(-1))


def _interpolate(y: Tensor, lo: Tensor, width: Tensor, flo: Tensor, fhi: Tensor) -> Tensor:
    df = fhi - flo
    pos = df > 0
    r = torch.where(pos, (y - flo) / torch.where(pos, df, torch.ones_like(df)), torch.full_like(df, 0.5))
    return lo + r.clamp(0.0, 1.0) * width


class _Implicit(torch.autograd.Function):
    """``x = f^-1(y; params)`` given the root ``x_root``; backward from Eqs. 8-9 with differentiable
    ops, re-entering ``_Implicit`` for x inside backward, so derivatives of every order are exact."""

    @staticmethod
    def forward(ctx, forward_fn, x_root: Tensor, y: Tensor, params: Tensor) -> Tensor:
        ctx.forward_fn = forward_fn
        ctx.save_for_backward(x_root, y, params)
        return x_root.clone()

    @staticmethod
    def backward(ctx, gx: Tensor):
        x_root, y, params = ctx.saved_tensors
        forward_fn = ctx.forward_fn
        need_y, need_p = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        create = torch.is_grad_enabled()
        grad_y: Optional[Tensor] = None
        grad_p: Optional[Tensor] = None
        with torch.enable_grad():
            if create:  # x as a differentiable function of (y, params) for the next order
                x = _Implicit.apply(forward_fn, x_root, y, params)
                p2 = params.clone() if params.requires_grad else params.detach().requires_grad_(True)
            else:
                x = x_root
                p2 = params.detach().requires_grad_(True)
            fx, logd = forward_fn(x, p2)
            v = gx * torch.exp(-logd)  # gx / f'(x)
            if need_y:
                grad_y = v
            if need_p:
                (dp,) = torch.autograd.grad(fx, p2, grad_outputs=v, create_graph=create)
                grad_p = -dp
        if not create:
            grad_y = None if grad_y is None else grad_y.detach()
            grad_p = None if grad_p is None else grad_p.detach()
        return None, None, grad_y, grad_p


def implicit_inverse(forward_fn: Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]], x_root: Tensor,
                     y: Tensor, params: Tensor) -> Tensor:
    """Attach implicit gradients to a root ``x_root`` of ``forward_fn(x, params)[0] = y``.

    ``forward_fn(x, params) -> (f(x), log f'(x))`` elementwise (e.g. a transform's ``forward``);
    ``x_root``, ``y`` (B, D); ``params`` (B, D, P). Returns x (B, D), equal to ``x_root``, whose
    derivatives w.r.t. ``y`` and ``params`` (any order, ``create_graph=True`` works) are Eqs. 8-9.
    """
    if torch.is_grad_enabled() and (y.requires_grad or params.requires_grad):
        return _Implicit.apply(forward_fn, x_root.detach(), y, params)
    return x_root.detach()


def rootfind_inverse(transform, y: Tensor, params: Tensor, n_bins: int = 100, tol: float = 1e-6,
                     max_iter: int = 100, xtol: float = 0.0,
                     stats: Optional[dict] = None) -> Tuple[Tensor, Tensor]:
    """Inverse of an ``ElementwiseTransform`` by root finding: ``y`` (B, D), ``params`` (B, D, P) ->
    ``(x, -log f'(x))`` (B, D), differentiable to any order through ``implicit_inverse``.
    The params are prepared once; all candidate points of an iteration go through one batched call.
    Requires ``f`` increasing on [0, 1] with the root inside (true for every transform whose f(0) = 0,
    f(1) = 1, i.e. not for the circle rotation of ``Affine``, which has an analytic inverse)."""
    fn = transform.value_fn(params)
    x_root = multibin_bisection(fn, y, 0.0, 1.0, n_bins=n_bins, tol=tol, max_iter=max_iter, xtol=xtol,
                                stats=stats)
    x = implicit_inverse(transform.forward, x_root, y, params)
    _, logd = transform.forward(x, params)
    return x, -logd
