"""Multi-bin bisection and the implicit (inverse-function-theorem) gradients of inverted transforms."""
import json
from types import SimpleNamespace
from typing import Tuple

import pytest
import torch
from torch import Tensor, nn

from openmm_smoothflow.transforms import (Affine, BumpMixture, ElementwiseTransform, RationalQuadraticSpline,
                                          multibin_bisection, rootfind_inverse)

from transform_cases import F64, FACTORIES, rand_params

def circle_dist(a: Tensor, b: Tensor) -> Tensor:
    d = torch.remainder(a - b, 1.0)
    return torch.minimum(d, 1.0 - d)


def cubic(x: Tensor) -> Tensor:
    """An increasing test function on [0, 1] with f' in [0.05, 3.05]."""
    return 0.05 * x + (x - 0.5) ** 3 * 4.0 + 0.5


@pytest.mark.parametrize("n_bins", [2, 3, 16, 100])
def test_multibin_bisection_default_tolerance(n_bins):
    y = torch.linspace(0.0, 1.0, 1001, dtype=F64).view(7, 143)  # batch of 7 x 143 elements
    y = cubic(torch.zeros(())) + (cubic(torch.ones(())) - cubic(torch.zeros(()))) * y
    stats = {}
    x = multibin_bisection(cubic, y, n_bins=n_bins, stats=stats)
    assert x.shape == y.shape
    assert (cubic(x) - y).abs().max() <= 1e-6
    assert ((x >= 0) & (x <= 1)).all() and stats["evaluations"] >= 2


def test_multibin_bisection_out_of_range_and_float32():
    y = torch.tensor([[-0.5, 1.7, 0.3]], dtype=F64)  # f([0, 1]) = [0.0, 1.05]
    x = multibin_bisection(cubic, y, n_bins=4)
    torch.testing.assert_close(x[0, :2], torch.tensor([0.0, 1.0], dtype=F64))
    # float32: tol 1e-6 is reachable for a moderate slope; the loop always terminates
    y32 = torch.rand(50, 20, dtype=torch.float32) * 0.9 + 0.05
    for n_bins in (2, 64):
        stats = {}
        x32 = multibin_bisection(cubic, y32, n_bins=n_bins, tol=1e-6, stats=stats)
        assert x32.dtype == torch.float32 and (cubic(x32.double()) - y32.double()).abs().max() < 2e-6
        assert stats["evaluations"] < 40
    # a tolerance below float32 resolution ends at the bracket resolution instead of max_iter
    stats = {}
    multibin_bisection(cubic, y32, n_bins=2, tol=1e-12, max_iter=1000, stats=stats)
    assert stats["evaluations"] < 40


def test_few_vs_many_bins_find_the_same_roots():
    t = BumpMixture(6)
    params = rand_params(t, 8, 40, scale=2.0)
    y = torch.rand(8, 40, dtype=F64)
    roots = {}
    for n_bins in (2, 100):
        stats = {}
        roots[n_bins] = multibin_bisection(t.value_fn(params), y, n_bins=n_bins, tol=1e-12, stats=stats)
        roots[f"evals{n_bins}"] = stats["evaluations"]
    torch.testing.assert_close(roots[2], roots[100], atol=1e-10, rtol=0)
    assert roots["evals2"] > 2 * roots["evals100"]  # the point of multi-bin: fewer sequential steps


@pytest.mark.parametrize("name", list(FACTORIES))
def test_inverse_round_trip(name):
    t = FACTORIES[name]()
    batch, dim = 4, 500
    x = torch.rand(batch, dim, dtype=F64)
    x[:, :3] = torch.tensor([0.0, 1.0, 0.5], dtype=F64)
    if name == "affine":
        x = x.clamp(1e-6, 1 - 1e-6)
    params = rand_params(t, batch, dim, scale=0.5 if name == "affine" else 1.5)
    y, logd = t(x, params)
    x2, logd_inv = t.inverse(y, params)  # bumps: root finding; spline/affine: analytic
    dist = circle_dist(x2, x) if t.circular else (x2 - x).abs()
    assert dist.max() <= 1e-6
    assert (t(x2, params)[0] - y).abs().max() <= 1e-6
    torch.testing.assert_close(logd_inv, -logd, atol=1e-3, rtol=0)
    if name.startswith("spline"):  # the same spline inverted by bisection
        x3, logd3 = ElementwiseTransform.inverse(t, y, params)
        assert (circle_dist(x3, x) if t.circular else (x3 - x).abs()).max() <= 1e-6


def test_tight_tolerance_round_trip_and_logdet():
    t = BumpMixture(8, circular=True)
    params = rand_params(t, 3, 200, scale=2.0)
    x = torch.rand(3, 200, dtype=F64)
    y, logd = t(x, params)
    x2, logd_inv = rootfind_inverse(t, y, params, n_bins=32, tol=1e-13)
    torch.testing.assert_close(x2, x, atol=1e-11, rtol=0)
    torch.testing.assert_close(logd_inv, -logd, atol=1e-7, rtol=0)


class SmallNet(nn.Module):
    def __init__(self, n_cond, dim, n_params):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.dim, self.n_params = dim, n_params
        self.w1 = nn.Parameter(torch.randn(n_cond, 6, generator=g, dtype=F64))
        self.w2 = nn.Parameter(0.7 * torch.randn(6, dim * n_params, generator=g, dtype=F64))

    def forward(self, cond):
        return (torch.tanh(cond @ self.w1) @ self.w2).view(cond.shape[0], self.dim, self.n_params)


IMPLICIT = {
    "bump-exp2": lambda: BumpMixture(3),
    "bump-mono3-circ": lambda: BumpMixture(3, circular=True, ramp="monomial", order=3),
    "bump-exp1-circ": lambda: BumpMixture(3, circular=True, beta=1),
    "spline": lambda: RationalQuadraticSpline(4),
}


@pytest.mark.parametrize("name", list(IMPLICIT))
def test_implicit_gradients_gradcheck_and_gradgradcheck(name):
    """First and second derivatives of (x, log|dx/dy|) w.r.t. y, params and conditioning inputs."""
    t = IMPLICIT[name]()
    batch, dim = 2, 2
    with torch.random.fork_rng():  # the net's weights fixed, whatever ran before (finite differences are seed-sensitive)
        torch.manual_seed(0)
        net = SmallNet(3, dim, t.n_params)
    g = torch.Generator().manual_seed(1)
    y = (0.1 + 0.8 * torch.rand(batch, dim, generator=g, dtype=F64)).requires_grad_(True)
    params = (1.5 * torch.randn(batch, dim, t.n_params, generator=g, dtype=F64)).requires_grad_(True)
    cond = torch.randn(batch, 3, generator=g, dtype=F64).requires_grad_(True)

    def by_params(y_, p_):
        return rootfind_inverse(t, y_, p_, n_bins=16, tol=1e-13)

    def by_cond(y_, c_):
        return rootfind_inverse(t, y_, net(c_), n_bins=16, tol=1e-13)

    for fn, inputs in ((by_params, (y, params)), (by_cond, (y, cond))):
        assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-5)
        # second derivatives reach ~1e3 here; finite differences of root-found values leave ~1e-5 of noise
        # where the exact value is 0 (elementwise): atol 1e-4, still far below any wrong term
        assert torch.autograd.gradgradcheck(fn, inputs, atol=1e-4, rtol=1e-4)


def test_implicit_gradients_equal_analytic_inverse_gradients():
    """Root finding + Eqs. 8-11 reproduce autograd through the spline's analytic inverse, 2nd order too."""
    t = RationalQuadraticSpline(5)
    g = torch.Generator().manual_seed(2)
    y = torch.rand(6, 10, generator=g, dtype=F64).requires_grad_(True)
    params = torch.randn(6, 10, t.n_params, generator=g, dtype=F64).requires_grad_(True)
    weights = torch.randn(6, 10, generator=g, dtype=F64)

    def grads(inverse):
        x, logd = inverse(y, params)
        loss = (weights * x).sum() + (weights * logd ** 2).sum()
        gy, gp = torch.autograd.grad(loss, (y, params), create_graph=True)
        hy, hp = torch.autograd.grad((gy ** 2).sum() + (gp ** 2).sum(), (y, params))  # like force matching
        return [v.detach() for v in (x, logd, gy, gp, hy, hp)]

    analytic = grads(t.inverse)
    implicit = grads(lambda y_, p_: rootfind_inverse(t, y_, p_, n_bins=32, tol=1e-14))
    for a, b in zip(analytic, implicit):
        torch.testing.assert_close(b, a, atol=1e-7, rtol=1e-6)


class OnlyForward(ElementwiseTransform):
    """A transform that implements forward only (no _prepare/_evaluate): the default inverse still works."""

    def __init__(self):
        super().__init__(1, False)

    def forward(self, x: Tensor, params: Tensor) -> Tuple[Tensor, Tensor]:
        k = torch.nn.functional.softplus(params[..., 0]) + 0.5
        y = (torch.exp(k * x) - 1.0) / (torch.exp(k) - 1.0)
        return y, torch.log(k * torch.exp(k * x) / (torch.exp(k) - 1.0))


def test_default_inverse_of_forward_only_transform():
    t = OnlyForward()
    params = torch.randn(5, 7, 1, dtype=F64, requires_grad=True)
    x = torch.rand(5, 7, dtype=F64)
    y, logd = t(x, params)
    x2, logd2 = t.inverse(y.detach(), params)
    torch.testing.assert_close(x2, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(logd2, -logd, atol=1e-5, rtol=0)
    (gp,) = torch.autograd.grad(x2.sum(), params)
    assert torch.isfinite(gp).all()


def test_benchmark_runs_and_writes_json(tmp_path, capsys):
    from openmm_smoothflow.commands import bench_inverse

    out = tmp_path / "bench.json"
    args = SimpleNamespace(dims=[2, 8], bins=[2, 8], batch_size=4, spline_bins=4, hidden=8, repeats=2,
                           min_time=0.0, tol=1e-6, dtype="float64", threads=None, seed=0, out=str(out),
                           no_progress=True, tables=["si1"])
    assert bench_inverse.run(args) == 0
    data = json.loads(out.read_text())
    assert [row["dim"] for row in data["table"]] == [2, 8]
    assert data["table"][0]["inversion"]["K_opt"] in (2, 8)
    assert "Kopt" in capsys.readouterr().out


def test_bin_count_follows_the_element_count_and_finds_the_same_roots():
    from openmm_smoothflow.transforms.rootfind import choose_bins

    counts = [1, 32, 64, 65, 512, 1024, 2048, 10 ** 6]
    bins = [choose_bins(n) for n in counts]
    assert bins == sorted(bins, reverse=True) and bins[0] >= 8 and bins[-1] == 2  # many bins for few elements
    t = BumpMixture(6)
    assert t.rootfind_bins is None  # the default: chosen per call
    for batch in (1, 64):
        params = rand_params(t, batch, 40, scale=2.0)
        y = torch.rand(batch, 40, dtype=F64)
        x_auto, logd_auto = t.inverse(y, params)
        x_fixed, _ = rootfind_inverse(t, y, params, n_bins=16, tol=t.rootfind_tol)
        torch.testing.assert_close(x_auto, x_fixed, atol=1e-5, rtol=0)
        assert (t.forward(x_auto, params)[0] - y).abs().max() <= 1e-6


def test_bump_and_sampling_benchmarks_report_their_rows():
    from openmm_smoothflow.benchmarks.inverse import bump_rows, format_bump_table

    rows = bump_rows(shapes=[(1, 2), (4, 8)], bins=(2, 8), repeats=1, min_time=0.0, dtype=F64)
    assert [(r["batch"], r["dim"]) for r in rows] == [(1, 2), (4, 8)]
    for r in rows:
        assert r["K_best"] in (2, 8) and r["ratio_auto"] > 0 and set(r["bump_by_K"]) == {"2", "8"}
    assert "K auto" in format_bump_table(rows)
