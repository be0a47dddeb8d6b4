"""Multi-bin bisection (SI-1.4) and exact implicit gradients of the inverse (Eqs. 8-11).

``multibin_bisection`` inverts an elementwise increasing ``fn`` on a bracket; ``implicit_inverse`` /
``rootfind_inverse`` attach gradients of every order through the inverse function theorem:

    dx/dy = 1 / f'(x)                          (Eq. 8)
    dx/dtheta = -(df/dtheta)(x) / f'(x)        (Eq. 9)

and the log-derivative of the inverse, ``-log f'(x)``, is computed with the ordinary differentiable
forward at the returned x, so Eqs. 10-11 follow by the chain rule. Gradients w.r.t. conditioner
inputs flow through ``params``.
"""
import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


# (largest element count, K): the fastest bin count for a bump mixture on a CPU, measured by
# ``smoothflow bench inverse`` (``bins`` rows): at few elements the per-iteration overhead dominates and
# many bins (fewer iterations) win; at many elements the cost per point does and plain bisection wins
BINS_BY_ELEMENTS = ((64, 16), (512, 8), (1024, 4))


def choose_bins(n_elements: int) -> int:
    """The bin count K for ``n_elements`` simultaneous inversions (:data:`BINS_BY_ELEMENTS`, else 2)."""
    for largest, bins in BINS_BY_ELEMENTS:
        if n_elements <= largest:
            return bins
    return 2


def multibin_bisection(func: Callable[[Tensor], Tensor], y: Tensor, lower: float = 0.0, upper: float = 1.0,
                       n_bins: Optional[int] = 100, tol: float = 1e-6, max_iter: int = 100,
                       xtol: float = 0.0, stats: Optional[dict] = None,
                       max_points: int = 2 ** 20) -> Tensor:
    """Solve ``func(x) = y`` elementwise for ``x`` in ``[lower, upper]``; no autograd (use
    ``implicit_inverse`` for gradients).

    ``y``: any shape S. ``func`` maps candidates of shape S + (M,) to values of the same shape (M points
    per element, all evaluated in ONE call; each element's function must be increasing on the bracket).

    Each iteration splits every element's bracket into ``n_bins`` (K) equal bins, evaluates the K - 1
    interior grid points in one call and keeps the bin containing the root (K = 2 is plain bisection);
    all brackets have the same width, so no per-element bookkeeping is needed (``n_bins=None``: chosen
    from the number of elements, :func:`choose_bins`). Once the width is below
    ``sqrt(tol)`` the bracket end values are tracked and before each further step the regula-falsi
    point ``x_hat`` (linear interpolation inside the bracket, error ~ width^2 f''/8) is evaluated
    alone: the loop returns ``x_hat`` as soon as every element has ``|func(x_hat) - y| <= tol`` (and, if
    ``xtol > 0``, a bracket no wider than ``xtol``), when the width reaches the dtype's resolution,
    or after ``max_iter`` steps. ``y`` outside ``[func(lower), func(upper)]`` gives the nearer end.

    Precision: in float64 the default ``tol = 1e-6`` is always reached (typically the residual is far
    smaller); ``tol`` down to ~1e-13 works. In float32 the residual cannot go below roughly
    ``1e-7 * max(1, f'(x))`` (rounding of x and of f); with a smaller ``tol`` the loop ends at the
    bracket resolution (~1e-7 wide), so use ``tol >= 1e-6`` (or ``1e-5`` for steep f) in float32.
    If ``stats`` is a dict, ``stats["evaluations"]`` (sequential calls of ``func``) is set.
    A round with more than ``max_points`` candidate points is evaluated in slices along the candidate
    axis (same result; bounded memory and better cache use for large K x elements).
    """
    if n_bins is None:
        n_bins = choose_bins(y.numel())
    if n_bins < 2:
        raise ValueError("n_bins must be >= 2")
    y = y.detach()
    resolution = 4.0 * torch.finfo(y.dtype).eps * max(1.0, abs(lower), abs(upper))
    check_width = max(math.sqrt(tol), xtol)
    frac = torch.arange(0, n_bins + 1, dtype=y.dtype, device=y.device) / n_bins
    inner = frac[1:-1]
    yk = y.unsqueeze(-1)
    lo = torch.full_like(y, lower)
    width = float(upper - lower)
    flo = fhi = lo
    tracked = False
    evaluations = 0

    def fn(pts: Tensor) -> Tensor:
        return _chunked(func, pts, max_points)

    for _ in range(max_iter):
        if tracked:  # check the regula-falsi point first: usually the last evaluation needed
            xhat = _interpolate(y, lo, width, flo, fhi)
            evaluations += 1
            ok = (fn(xhat.unsqueeze(-1)).squeeze(-1) - y).abs() <= tol
            if (xtol <= 0.0 or width <= xtol) and bool(ok.all()) or width <= resolution:
                _record(stats, evaluations)
                return xhat
        evaluations += 1
        if tracked:  # interior grid; the bracket end values are known
            vals = torch.cat([flo.unsqueeze(-1), fn(lo.unsqueeze(-1) + width * inner), fhi.unsqueeze(-1)], dim=-1)
        elif width / n_bins <= check_width:  # start tracking: the full grid including both ends
            vals = fn(lo.unsqueeze(-1) + width * frac)
        else:  # plain multi-bin step: interior points only
            j = (fn(lo.unsqueeze(-1) + width * inner) < yk).sum(-1)
            width = width / n_bins
            lo = lo + j.to(y.dtype) * width
            continue
        j = (vals[..., 1:-1] < yk).sum(-1, keepdim=True)  # bin index in [0, K - 1]
        flo = vals.gather(-1, j).squeeze(-1)
        fhi = vals.gather(-1, j + 1).squeeze(-1)
        width = width / n_bins
        lo = lo + j.squeeze(-1).to(y.dtype) * width
        tracked = True
    _record(stats, evaluations)
    return _interpolate(y, lo, width, flo, fhi) if tracked else lo + 0.5 * width


def _chunked(fn: Callable[[Tensor], Tensor], pts: Tensor, max_points: int) -> Tensor:
    m = pts.shape[-1]
    step = max(1, max_points // max(1, pts.numel() // m))
    if step >= m:
        return fn(pts)
    return torch.cat([fn(pts[..., i:i + step]) for i in range(0, m, step)], dim=-1)


def _record(stats: Optional[dict], evaluations: int) -> None:
    if stats is not None:
        stats["evaluations"] = evaluations


def _interpolate(y: Tensor, lo: Tensor, width: float, flo: Tensor, fhi: Tensor) -> Tensor:
    """Regula-falsi point in ``[lo, lo + width]`` (a flat bracket, fhi == flo, gives one of its ends)."""
    r = (y - flo) / (fhi - flo).clamp_min(torch.finfo(y.dtype).tiny)
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


def rootfind_inverse(transform, y: Tensor, params: Tensor, n_bins: Optional[int] = None, tol: float = 1e-6,
                     max_iter: int = 100, xtol: float = 0.0,
                     stats: Optional[dict] = None) -> Tuple[Tensor, Tensor]:
    """Inverse of an ``ElementwiseTransform`` by root finding: ``y`` (B, D), ``params`` (B, D, P) ->
    ``(x, -log f'(x))`` (B, D), differentiable to any order through ``implicit_inverse``.
    The params are prepared once; all candidate points of an iteration go through one batched call;
    ``n_bins=None`` picks the bin count from ``y.numel()`` (:func:`choose_bins`).
    Requires ``f`` increasing on [0, 1] with the root inside (true for every transform whose f(0) = 0,
    f(1) = 1, i.e. not for the circle rotation of ``Affine``, which has an analytic inverse)."""
    fn = transform.value_fn(params)
    x_root = multibin_bisection(fn, y, 0.0, 1.0, n_bins=n_bins, tol=tol, max_iter=max_iter, xtol=xtol,
                                stats=stats)
    if not (torch.is_grad_enabled() and (y.requires_grad or params.requires_grad)):
        return x_root, -fn.log_derivative(x_root)  # no graph needed: reuse the prepared params
    x = implicit_inverse(transform.forward, x_root, y, params)
    _, logd = transform.forward(x, params)
    return x, -logd
