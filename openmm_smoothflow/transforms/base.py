"""The interface shared by every elementwise bijection of [0, 1] or of the circle."""

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn


class ElementwiseTransform(nn.Module):
    """An elementwise bijection ``y = f(x; params)`` of [0, 1] (``circular=False``) or of the circle.

    Shapes: ``x``, ``y`` (B, D); ``params`` (B, D, n_params), raw (unconstrained) conditioner outputs.
    ``forward`` is analytic and TorchScript-able; it returns ``(f(x), log f'(x))``, both (B, D).
    ``inverse`` returns ``(f^-1(y), log |d f^-1 / dy|)``, both (B, D).
    Subclasses document their parametrisation and start near the identity for ``params == 0``.

    Subclasses implement two TorchScript-able pieces that ``forward`` combines:

    * ``_prepare(params) -> List[Tensor]``: turn raw params (B, D, P) into constrained shape tensors;
    * ``_evaluate(x, prep, with_logdet) -> (y, log f'(x))``: evaluate at ``x`` of shape (B, D, M), i.e. at
      M points per element sharing the element's params (``log f'`` is ``y`` itself when
      ``with_logdet`` is False, to skip its cost).

    The split lets the root finder prepare the params once and then evaluate many candidate points per
    element in one batched call (``value_fn``).

    ``forward`` is ``forward_cached(x, params, False)`` without the cache. With ``need_cache=True``,
    ``forward_cached`` also returns what the hand-written backward pass needs (:func:`elementwise_backward`):
    the local derivatives ``[d(f, log f')/dx (2, B, D), d(f, log f')/dparams (2, B, D, n_params)]``
    (axis 0: f, log f'), computed alongside the one forward evaluation. Transforms that provide them set
    ``has_jacobian = True`` (the generator's analytic-gradient mode); the default raises.

    The default ``inverse`` is multi-bin bisection (``rootfind.py``) with exact implicit gradients of every
    order (Eqs. 8-11); transforms with an analytic inverse override it. ``rootfind_bins`` /
    ``rootfind_tol`` / ``rootfind_max_iter`` configure it (``rootfind_bins = None``: K chosen from the number of
    elements inverted at once, ``rootfind.choose_bins``).
    """

    n_params: int
    circular: bool
    has_jacobian = False  # forward_cached(..., need_cache=True) implemented

    def __init__(self, n_params: int, circular: bool) -> None:
        super().__init__()
        self.n_params = n_params
        self.circular = circular
        self.rootfind_bins = None  # None: from the element count (rootfind.choose_bins); the paper used 100 on a GPU
        self.rootfind_tol = 1e-6
        self.rootfind_max_iter = 100

    def forward(self, x: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        y, logd, _ = self.forward_cached(x, params, False)
        return y, logd

    def forward_cached(self, x: Tensor, params: Tensor, need_cache: bool) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """``(f(x), log f'(x))`` (B, D) and, if ``need_cache``, the cache of :func:`elementwise_backward`
        (else ``[]``). This default has no analytic derivatives (``has_jacobian = False``)."""
        if need_cache:
            raise NotImplementedError("this transform has no analytic jacobian")
        y, logd = self._evaluate(x.unsqueeze(-1), self._prepare(params), True)
        return y.squeeze(-1), logd.squeeze(-1), []

    def _prepare(self, params: Tensor) -> List[Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _evaluate(self, x: Tensor, prep: List[Tensor], with_logdet: bool) -> Tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    @torch.jit.unused
    def value_fn(self, params: Tensor) -> "PreparedTransform":
        """Returns a callable ``fn(x (B, D, M)) -> f(x) (B, D, M)`` with ``params`` prepared once (no
        autograd); ``fn.log_derivative(x (B, D)) -> log f'(x) (B, D)`` reuses the same preparation."""
        return PreparedTransform(self, params)

    @torch.jit.unused
    def inverse(self, y: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        """``x = f^-1(y)`` by multi-bin bisection (``rootfind_bins`` bins, residual ``|f(x) - y| <=
        rootfind_tol``) and ``log |dx/dy| = -log f'(x)``, both (B, D). Differentiable to any order in
        ``y`` and ``params`` through the inverse function theorem (``rootfind.implicit_inverse``)."""
        from .rootfind import rootfind_inverse

        return rootfind_inverse(self, y, params, n_bins=self.rootfind_bins, tol=self.rootfind_tol,
                                max_iter=self.rootfind_max_iter)


def elementwise_backward(grad_y: Tensor, grad_logd: float, cache: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """The hand-written backward of an elementwise transform: the gradients w.r.t. ``x`` (B, D) and
    ``params`` (B, D, n_params) of ``sum(grad_y * f(x)) + grad_logd * sum(log f'(x))``, from the cache
    of ``forward_cached(x, params, True)``; ``grad_y`` (B, D), ``grad_logd`` a number (-1 for an energy)."""
    jac_x, jac_params = cache[0], cache[1]
    grad_x = torch.add(grad_y * jac_x[0], jac_x[1], alpha=grad_logd)
    grad_params = torch.add(grad_y.unsqueeze(-1) * jac_params[0], jac_params[1], alpha=grad_logd)
    return grad_x, grad_params


class PreparedTransform:
    """A transform with its params prepared once, for root finding (no autograd)."""

    def __init__(self, transform: ElementwiseTransform, params: Tensor) -> None:
        self.transform = transform
        self.params = params.detach()
        try:
            with torch.no_grad():
                self.prep: Optional[List[Tensor]] = transform._prepare(self.params)
        except NotImplementedError:  # a subclass that only implements forward: expand over M
            self.prep = None

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if self.prep is not None:
                return self.transform._evaluate(x, self.prep, False)[0]
            m, p = x.shape[-1], self.params
            xm = x.movedim(-1, 0).reshape(m * x.shape[0], *x.shape[1:-1])
            ym = self.transform.forward(xm, p.repeat(m, *([1] * (p.dim() - 1))))[0]
            return ym.reshape(m, *x.shape[:-1]).movedim(0, -1)

    def log_derivative(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            if self.prep is not None:
                return self.transform._evaluate(x.unsqueeze(-1), self.prep, True)[1].squeeze(-1)
            return self.transform.forward(x, self.params)[1]
