"""The hand-written backward of the elementwise transforms (``forward_cached(..., True)`` +
``elementwise_backward``) against autograd of the same forward, case by case: interval and circle,
float32 and float64, inside [0, 1], outside it, on the flat parts outside every bump's support, at
saturating params."""
import pytest
import torch

from openmm_smoothflow.transforms import Affine, BumpMixture, RationalQuadraticSpline
from openmm_smoothflow.transforms.base import elementwise_backward

from transform_cases import FACTORIES, rand_params

# relative tolerance of the analytic backward vs autograd (max |difference| / max |autograd|)
REL = {torch.float64: 1e-10, torch.float32: 1e-4}
WITH_JACOBIAN = [name for name in FACTORIES if FACTORIES[name]().has_jacobian]


def points(region: str, t, params: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) evaluation points in ``region`` (float64)."""
    g = torch.Generator().manual_seed(11)
    b = params.shape[0]
    if region == "inside":
        return torch.rand(b, n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    if region == "outside":  # past either end of [0, 1]: constant bumps plus the linear part
        x = torch.rand(b, n, generator=g, dtype=torch.float64) * 0.4
        return torch.where(torch.arange(n) % 2 == 0, -x - 1e-3, 1.0 + 1e-3 + x)
    if region == "ends":  # exactly 0 and 1, where f is pinned
        return torch.tensor([0.0, 1.0], dtype=torch.float64).repeat(b, n // 2)
    if region == "flat":  # just outside and just inside the supports of the bumps: f' = c there
        a, centre, *_ = t.constrained(params.double())
        lo, hi = centre - 0.5 / a, centre + 0.5 / a  # (B, n, K)
        edges = torch.stack([lo - 1e-3, lo + 1e-4, hi - 1e-4, hi + 1e-3], -1)[..., 0, :]  # first bump
        return edges.reshape(b, -1)[:, :n].clamp(-0.5, 1.5)
    raise ValueError(region)


CASES = [(name, dtype, region, scale)
         for name in WITH_JACOBIAN
         for dtype in (torch.float64, torch.float32)
         for region in ("inside", "outside", "ends", "flat")
         for scale in (1.5, 4.0)]  # 4.0: sharp bumps, saturated ramps, a past its exp clamp


def analytic_and_autograd(t, x, params, grad_y, grad_logd):
    y, logd, cache = t.forward_cached(x, params, True)
    gx, gp = elementwise_backward(grad_y, grad_logd, cache)
    xa, pa = x.clone().requires_grad_(True), params.clone().requires_grad_(True)
    ya, la = t(xa, pa)
    ax, ap = torch.autograd.grad((grad_y * ya).sum() + grad_logd * la.sum(), (xa, pa))
    return (y, logd, gx, gp), (ya.detach(), la.detach(), ax, ap)


@pytest.mark.parametrize("name, dtype, region, scale", CASES)
def test_analytic_backward_equals_autograd(name, dtype, region, scale):
    t = FACTORIES[name]().to(dtype)
    params = rand_params(t, 3, 16, scale=scale, seed=5).to(dtype)
    x = points(region, t, params, 16).to(dtype)
    if region == "outside" and t.circular:  # the circle has no outside: any real x is a point on it
        x = x * 3.0
    grad_y = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    results = []
    for cot_y, cot_logd in ((grad_y, -1.0), (grad_y, 0.0), (torch.zeros_like(grad_y), 1.0)):
        got, want = analytic_and_autograd(t, x, params, cot_y, cot_logd)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # one forward: same values
        results.append((got[2:], want[2:], f"cotangents (f: {'y' if cot_y.any() else 0}, log f': {cot_logd})"))
    for k, what in enumerate(("d/dx", "d/dparams")):
        # the scale of a derivative over all cotangents: where f is pinned (f(0) = 0, f(1) = 1) df/dparams
        # vanishes and autograd leaves rounding noise there
        scale = max(float(want[k].abs().max()) for _, want, _ in results)
        for got, want, cot in results:
            err = float((got[k] - want[k]).abs().max())
            assert torch.isfinite(got[k]).all()
            assert err <= REL[dtype] * scale, f"{what}, {cot}: max |analytic - autograd| = {err:.3g}, scale {scale:.3g}"


def test_cases_reach_the_flat_parts_and_the_exp_clamp():
    """The table covers what it claims: points outside every bump's support and raw a past its clamp."""
    t = BumpMixture(5)
    params = rand_params(t, 3, 16, scale=4.0, seed=5)
    assert bool((params.view(3, 16, 5, 5)[:, :, 0] > 9.0).any())
    x = points("flat", t, params, 16)
    cache = t.forward_cached(x, params, True)[2]
    assert bool((cache[0][1] == 0).any())  # d log f'/dx == 0: no bump active at x


@pytest.mark.parametrize("t", [RationalQuadraticSpline(4), Affine(), Affine(circular=True)])
def test_transforms_without_analytic_backward_say_so(t):
    assert not t.has_jacobian
    params = torch.zeros(2, 3, t.n_params, dtype=torch.float64)
    x = torch.rand(2, 3, dtype=torch.float64)
    y, logd, cache = t.forward_cached(x, params, False)
    assert cache == [] and torch.equal(y, t(x, params)[0])
    with pytest.raises(NotImplementedError):
        t.forward_cached(x, params, True)


@pytest.mark.parametrize("name", WITH_JACOBIAN)
def test_scripted_backward_equals_eager(name):
    t = FACTORIES[name]()
    scripted = torch.jit.script(t)
    params = rand_params(t, 2, 8, seed=3)
    x = torch.rand(2, 8, dtype=torch.float64)
    eager = t.forward_cached(x, params, True)
    script = scripted.forward_cached(x, params, True)
    for a, b in zip(eager[:2] + tuple(eager[2]), script[:2] + tuple(script[2])):
        torch.testing.assert_close(b, a, atol=0, rtol=0)
