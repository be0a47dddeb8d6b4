"""Elementwise transforms: bijectivity, boundary values, circular smoothness, analytic log-derivatives,
C-infinity vs C^1 contrast, numerical robustness at edges and extreme params, TorchScript."""
import pytest
import torch

from openmm_smoothflow.transforms import (Affine, BumpMixture, RationalQuadraticSpline, exp_ramp, generalized_sigmoid,
                                          monomial_ramp)

from transform_cases import F64, FACTORIES, rand_params

MONOTONE_ON_01 = [k for k in FACTORIES if k != "affine-circ"]  # the rotation wraps around
BUMPS = [k for k in FACTORIES if k.startswith("bump")]


def grid(n=2001, batch=3, lo=0.0, hi=1.0):
    """(batch, n): the same dense grid (endpoints included) for every batch row."""
    return torch.linspace(lo, hi, n, dtype=F64).expand(batch, n).contiguous()


def derivatives(t, x, params, order=3):
    """[f, f', f'', ...] (autograd, elementwise in x) up to ``order``."""
    x = x.clone().requires_grad_(True)
    out = [t(x, params)[0]]
    for _ in range(order):
        (d,) = torch.autograd.grad(out[-1].sum(), x, create_graph=True)
        out.append(d)
    return [o.detach() for o in out]


@pytest.mark.parametrize("name", list(FACTORIES))
def test_n_params_shapes_and_identity_at_zero(name):
    t = FACTORIES[name]()
    expected = {"bump": 25, "spline": 18, "affine": 2}[name.split("-")[0]]
    if name == "affine-circ":
        expected = 1
    if name == "spline":
        expected = 19  # interval splines have K + 1 derivatives
    assert t.n_params == expected
    x = torch.rand(4, 7, dtype=F64)
    y, logd = t(x, torch.zeros(4, 7, t.n_params, dtype=F64))
    assert y.shape == logd.shape == (4, 7)
    # params == 0 starts at (bumps: close to) the identity
    if name.startswith("bump"):  # c = 1/2 and K spread bumps: f(x) within 0.05 of x, f' within a factor e
        # (beta = 2: e^2; its bumps are more peaked at the same slope)
        assert (y - x).abs().max() < 0.05 and logd.abs().max() < (2.1 if name.startswith("bump-exp2") else 1.0)
    else:
        assert (y - x).abs().max() < 1e-12 and logd.abs().max() < 1e-12


@pytest.mark.parametrize("name", MONOTONE_ON_01)
def test_monotone_and_bijective_on_dense_grid(name):
    t = FACTORIES[name]()
    x = grid()
    params = rand_params(t, 3, x.shape[1])[:, :1].expand(3, x.shape[1], t.n_params)  # one f per row
    y, _ = t(x, params)
    assert torch.isfinite(y).all()
    assert (y.diff(dim=1) > 0).all(), "not strictly increasing"
    if not name.startswith("affine"):  # onto [0, 1]
        torch.testing.assert_close(y[:, 0], torch.zeros(3, dtype=F64), atol=1e-12, rtol=0)
        torch.testing.assert_close(y[:, -1], torch.ones(3, dtype=F64), atol=1e-12, rtol=0)
    else:  # a bijection of the open interval, evaluated at x clamped to [1e-6, 1 - 1e-6]
        assert ((y > 0) & (y < 1)).all()


def test_circle_rotation_is_a_rotation():
    t = Affine(circular=True)
    x = grid(batch=2)
    params = torch.tensor([0.3, -1.7], dtype=F64).view(2, 1, 1).expand(2, x.shape[1], 1)
    y, logd = t(x, params)
    shift = torch.remainder(y - x, 1.0)
    assert (torch.minimum(shift - shift[:, :1], 1 - (shift - shift[:, :1])).abs() < 1e-12).all()
    assert (logd == 0).all()


@pytest.mark.parametrize("name", [k for k in FACTORIES if "circ" in k and k != "affine-circ"])
def test_circular_periodic_extension(name):
    t = FACTORIES[name]()
    x = grid(n=101)
    params = rand_params(t, 3, 101)
    y0, l0 = t(x, params)
    for shift in (-1.0, 1.0):
        ys, ls = t(x + shift, params)
        torch.testing.assert_close(ys, y0 + shift, atol=1e-12, rtol=0)
        torch.testing.assert_close(ls, l0, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["bump-exp2-circ", "bump-mono3-circ", "spline-circ", "bump-exp2", "spline"])
def test_circular_derivatives_match_at_0_and_1(name):
    """Autograd derivatives at 0 and 1, and one-sided finite differences taken inside [0, 1] only."""
    t = FACTORIES[name]()
    params = rand_params(t, 4, 1, scale=1.0, seed=3)
    smooth = {"bump-exp2-circ": 3, "bump-mono3-circ": 2, "spline-circ": 1}  # orders that must match
    d0 = derivatives(t, torch.zeros(4, 1, dtype=F64), params, 3)
    d1 = derivatives(t, torch.ones(4, 1, dtype=F64), params, 3)
    h = 1e-4
    f = lambda v: t(torch.full((4, 1), v, dtype=F64), params)[0]  # noqa: E731
    fd1_right, fd1_left = (f(h) - f(0.0)) / h, (f(1.0) - f(1.0 - h)) / h
    fd2_right = (f(2 * h) - 2 * f(h) + f(0.0)) / h ** 2
    fd2_left = (f(1.0) - 2 * f(1.0 - h) + f(1.0 - 2 * h)) / h ** 2
    scale = 1.0 + float(d0[2].abs().max() + d0[3].abs().max())
    if name in smooth:
        for k in range(1, smooth[name] + 1):
            torch.testing.assert_close(d0[k], d1[k], atol=1e-8, rtol=1e-8)
        assert (fd1_right - fd1_left).abs().max() < 2 * h * scale
        if smooth[name] >= 3:
            assert (fd2_right - fd2_left).abs().max() < 1e-3 * scale
    else:  # the interval versions are not periodic: the contrast shows the test can fail
        assert (d0[1] - d1[1]).abs().max() > 1e-4


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("ramp", [dict(), dict(beta=1), dict(ramp="monomial", order=3)])
def test_bump_mixture_matches_reference_formulas(circular, ramp):
    """Eq. 7 and the wrapped closed form F(x) = sum_{k in -1,0,1} (g(x+k) - g(k)), written out directly."""
    t = BumpMixture(4, circular=circular, **ramp)
    params = rand_params(t, 2, 1, scale=2.0, seed=7).expand(2, 201, t.n_params)
    x = grid(n=201, batch=2)
    a, b, c, alpha, w = t.constrained(params)

    def g(v):
        return generalized_sigmoid(a * (v.unsqueeze(-1) - b) + 0.5, alpha, ramp.get("ramp", "exp"),
                                   t.beta, ramp.get("order", 2))[0]

    zero, one = torch.zeros_like(x), torch.ones_like(x)
    if circular:
        cdf = sum(g(x + k) - g(zero + k) for k in (-1.0, 0.0, 1.0))
    else:
        cdf = (g(x) - g(zero)) / (g(one) - g(zero))
    ref = (w * ((1 - c) * cdf + c * x.unsqueeze(-1))).sum(-1)
    torch.testing.assert_close(t(x, params)[0], ref, atol=1e-13, rtol=0)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_logdet_equals_autograd(name):
    t = FACTORIES[name]()
    x = grid(n=301, lo=1e-3, hi=1 - 1e-3)
    params = rand_params(t, 3, 301, scale=0.5 if name == "affine" else 1.5)  # affine: no saturation
    _, logd = t(x, params)
    (dy,) = derivatives(t, x, params, 1)[1:]
    torch.testing.assert_close(logd, torch.log(dy), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("ramp", [dict(), dict(beta=1), dict(ramp="monomial", order=4)])
def test_single_bump_derivatives_vanish_smoothly_outside_support(ramp):
    t = BumpMixture(1, **ramp)
    params = torch.tensor([1.0, 0.3, 2.0, 0.0, 0.0], dtype=F64).view(1, 1, 5)  # 1 - c = 0.12
    a, b, c, _, _ = t.constrained(params)
    lo_edge, hi_edge = float(b - 0.5 / a), float(b + 0.5 / a)
    assert 0 < lo_edge < hi_edge < 1
    x = grid(n=4001, batch=1)
    f, d1, d2, d3 = derivatives(t, x, params.expand(1, 4001, 5), 3)
    outside = (x < lo_edge) | (x > hi_edge)
    assert outside.sum() > 1000
    torch.testing.assert_close(d1[outside], torch.full_like(d1[outside], float(c)), atol=1e-14, rtol=0)
    assert (d2[outside].abs() < 1e-12).all() and (d3[outside].abs() < 1e-10).all()
    # approaching an edge from inside, f' - c and f'' decay to 0 (continuously: no jump at the edge)
    width = hi_edge - lo_edge
    sizes = []
    for frac in (0.05, 0.01, 0.002):
        xs = torch.tensor([[lo_edge + frac * width, hi_edge - frac * width]], dtype=F64)
        e1, e2 = derivatives(t, xs, params.expand(1, 2, 5), 2)[1:]
        sizes.append((float((e1 - c.view(1, 1)).abs().max()), float(e2.abs().max())))
    for big, small in zip(sizes, sizes[1:]):
        assert small[0] <= big[0] + 1e-15 and small[1] <= big[1] + 1e-15
    assert sizes[-1][0] < 1e-6 and sizes[-1][1] < 1e-4
    # the bump itself: sigma' of the ramp is exactly zero outside (0, 1)
    tt = torch.tensor([-0.5, 0.0, 1.0, 1.5], dtype=F64, requires_grad=True)
    s, _ = generalized_sigmoid(tt, torch.tensor(0.7, dtype=F64))
    (ds,) = torch.autograd.grad(s.sum(), tt, create_graph=True)
    assert torch.equal(s.detach(), torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=F64)) and (ds == 0).all()


def test_spline_second_derivative_jumps_at_knots_bump_does_not():
    spline = RationalQuadraticSpline(6)
    sp = rand_params(spline, 1, 1, scale=1.0, seed=5)
    knots = spline._prepare(sp)[0][0, 0]  # inner knots
    delta = 1e-7
    xs = torch.stack([knots - delta, knots + delta], dim=-1).view(1, -1)
    d2 = derivatives(spline, xs, sp.expand(1, xs.shape[1], spline.n_params), 2)[2].view(-1, 2)
    spline_jump = (d2[:, 1] - d2[:, 0]).abs()
    # the bump mixture at the same points and at its bump edges
    bump = BumpMixture(6)
    bp = rand_params(bump, 1, 1, scale=1.0, seed=5)
    a, b, *_ = bump.constrained(bp)
    edges = torch.cat([b - 0.5 / a, b + 0.5 / a], dim=-1).view(-1)
    edges = edges[(edges > 0.01) & (edges < 0.99)]
    pts = torch.cat([knots, edges])
    xb = torch.stack([pts - delta, pts + delta], dim=-1).view(1, -1)
    d2b = derivatives(bump, xb, bp.expand(1, xb.shape[1], bump.n_params), 2)[2].view(-1, 2)
    bump_jump = (d2b[:, 1] - d2b[:, 0]).abs()
    scale = d2b.abs().max()
    assert spline_jump.min() > 1e-2, spline_jump  # finite jumps: C^1 only
    assert bump_jump.max() < 1e-4 * max(1.0, float(scale)), bump_jump  # ~ delta * f''': smooth


EXTREME = [30.0, -30.0, "mixed"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_finite_values_and_derivatives_at_edges_and_extreme_params(name, dtype):
    t = FACTORIES[name]()
    g = torch.Generator().manual_seed(1)
    for value in EXTREME:
        if value == "mixed":
            params = 30.0 * torch.sign(torch.randn(2, 1, t.n_params, generator=g))
        else:
            params = torch.full((2, 1, t.n_params), value)
        pts = [0.0, 1.0, 0.5, 1e-7, 1 - 1e-7]
        if name.startswith("bump"):
            a, b, *_ = t.constrained(params.double())
            pts += torch.cat([b - 0.5 / a, b + 0.5 / a], -1).flatten().clamp(0, 1).tolist()
        x = torch.tensor(pts, dtype=dtype).expand(2, len(pts)).contiguous().requires_grad_(True)
        p = params.to(dtype).expand(2, len(pts), t.n_params).contiguous().requires_grad_(True)
        y, logd = t(x, p)
        gx, gp = torch.autograd.grad(y.sum() + logd.sum(), (x, p), create_graph=True)
        second = gx.sum() + gp.sum()
        hx = hp = None  # the rotation's first derivatives are constants
        if second.requires_grad:
            hx, hp = torch.autograd.grad(second, (x, p), allow_unused=True)
        for v in (y, logd, gx, gp, hx, hp):
            assert v is None or torch.isfinite(v).all(), (name, value, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ramp", [dict(ramp="exp", beta=2), dict(ramp="exp", beta=1), dict(ramp="monomial", order=2)])
def test_generalized_sigmoid_is_finite_everywhere(ramp, dtype):
    t = torch.tensor([-1.0, 0.0, 1e-30, 1e-7, 0.3, 0.5, 1 - 1e-7, 1.0, 2.0], dtype=dtype).repeat(3)
    alpha = torch.tensor([1e-2, 1.0, 31.0], dtype=dtype).repeat_interleave(9)
    t.requires_grad_(True)
    alpha.requires_grad_(True)
    s, logd = generalized_sigmoid(t, alpha, ramp=ramp["ramp"], beta=ramp.get("beta", 2), order=ramp.get("order", 2))
    g = torch.autograd.grad(s.sum() + logd.sum(), (t, alpha), create_graph=True, allow_unused=True)
    g = tuple(v for v in g if v is not None)  # the monomial ramp ignores alpha
    h = torch.autograd.grad(sum(v.sum() for v in g), (t, alpha), allow_unused=True)
    for v in (s, logd) + g + h:
        assert v is None or torch.isfinite(v).all()
    assert ((s >= 0) & (s <= 1)).all()
    torch.testing.assert_close(s.detach()[5::9], torch.full((3,), 0.5, dtype=dtype))


def test_ramps():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    r = exp_ramp(x, torch.tensor(0.5, dtype=F64), beta=2)
    expected = torch.tensor([0.0, 0.0, -8.0, -2.0], dtype=F64).exp() * torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=F64)
    torch.testing.assert_close(r.detach(), expected)
    (d,) = torch.autograd.grad(r.sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(d2).all() and d[:2].abs().max() == 0
    torch.testing.assert_close(monomial_ramp(x.detach(), 3), torch.tensor([0.0, 0.0, 0.125, 1.0], dtype=F64))


def test_sigmoid_value_in_log_domain_matches_definition():
    """sigma[rho] = rho(t) / (rho(t) + rho(1 - t)) with the exp ramp, away from underflow."""
    t = torch.linspace(0.05, 0.95, 19, dtype=F64)
    alpha = torch.tensor(0.8, dtype=F64)
    rho = lambda v: torch.exp(-1.0 / (alpha * v ** 2))  # noqa: E731
    ref = rho(t) / (rho(t) + rho(1 - t))
    value, logd = generalized_sigmoid(t, alpha)
    torch.testing.assert_close(value, ref, atol=1e-14, rtol=0)
    drho = lambda v: 2.0 / (alpha * v ** 3) * rho(v)  # noqa: E731
    d = (drho(t) * rho(1 - t) + drho(1 - t) * rho(t)) / (rho(t) + rho(1 - t)) ** 2  # SI Eq. 25
    inside = (t > 0.12) & (t < 0.88)  # beyond, |s| > 100: sigma' < e^-100 is flushed to exactly 0
    torch.testing.assert_close(logd[inside], torch.log(d[inside]), atol=1e-10, rtol=1e-10)
    assert (torch.log(d[~inside]) < -100).all() and (logd[~inside] < -100).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_torchscript_matches_eager(name, dtype):
    t = FACTORIES[name]().to(dtype)
    scripted = torch.jit.script(t)
    x = torch.rand(5, 6, dtype=dtype)
    params = rand_params(t, 5, 6, dtype=dtype)
    ye, le = t(x, params)
    ys, ls = scripted(x, params)
    torch.testing.assert_close(ys, ye, atol=0, rtol=0)
    torch.testing.assert_close(ls, le, atol=0, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        BumpMixture(3, ramp="monomial")
    with pytest.raises(ValueError):
        BumpMixture(3, ramp="cubic")
    with pytest.raises(ValueError):
        RationalQuadraticSpline(2000)
