"""The 2-D toy problems (``benchmarks/toy_models.py``, ``benchmarks/toy.py``): energies, Metropolis-Hastings,
flows, force metrics, the bench command."""
import json
import math

import pytest
import torch

from openmm_smoothflow.benchmarks import toy, toy_models

torch.set_num_threads(1)


def _randomize(flow, scale=0.3, seed=0):
    """Random weights everywhere (the conditioners' last layers start at zero): a non-trivial flow."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def _ring_formula(beta, sigma):
    """u and du/dbeta written out: -log sum_i alpha_i exp(-(beta - r_i)^2 / (2 sigma^2))."""
    r = torch.tensor(toy_models.RADII, dtype=torch.float64)
    a = torch.tensor(toy_models.ALPHAS, dtype=torch.float64)
    terms = a * torch.exp(-(beta[:, None] - r) ** 2 / (2 * sigma ** 2))
    s = terms.sum(1)
    du_dbeta = (terms * (beta[:, None] - r) / sigma ** 2).sum(1) / s
    return -torch.log(s), du_dbeta


@pytest.mark.parametrize("problem", ["rings", "torus"])
def test_energy_matches_formula_and_forces(problem):
    energy = toy_models.make_energy(problem)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(500, 2, generator=g, dtype=torch.float64) * 2 - 1) * 3.0
    if problem == "rings":
        beta = x.norm(dim=1)
        dbeta = x / beta[:, None]
        sigma = 0.06
    else:
        c = torch.cos(x[:, 0]) + torch.cos(x[:, 1]) + 2
        beta = c.sqrt()
        dbeta = -torch.sin(x) / (2 * beta[:, None])
        sigma = 0.05
    u, du = _ring_formula(beta, sigma)
    torch.testing.assert_close(energy(x), u, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(energy.force(x), -du[:, None] * dbeta, rtol=1e-8, atol=1e-8)
    if problem == "torus":  # 2 pi-periodic in both coordinates, forces too
        shift = torch.tensor([2 * math.pi, -2 * math.pi], dtype=torch.float64)
        torch.testing.assert_close(energy(x + shift), u, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(energy.force(x + shift), energy.force(x), rtol=1e-7, atol=1e-7)
    # finite at the singular points of beta (origin; (pi, pi) on the torus)
    special = torch.tensor([[0.0, 0.0], [math.pi, math.pi]], dtype=torch.float64)
    assert torch.isfinite(energy(special)).all() and torch.isfinite(energy.force(special)).all()


def test_log_partition_quadrature():
    """Z of one narrow ring (radius r, width sigma, in the plane) is ~ 2 pi r sqrt(2 pi) sigma."""
    e = toy_models.RingEnergy(periodic=False, sigma=0.1, radii=[1.5], alphas=[1.0])
    expected = math.log(2 * math.pi * 1.5 * math.sqrt(2 * math.pi) * 0.1)
    assert abs(e.log_partition(600) - expected) < 1e-3


def _standard_error(samples, n_record, n_chains):
    chain_means = samples.view(n_record, n_chains).mean(0)
    return float(chain_means.mean()), float(chain_means.std() / math.sqrt(n_chains))


def test_metropolis_hastings_harmonic_mean():
    """u = k |x|^2 / 2: <x_1^2> = 1 / k; chains from a grid, a box far in the tails."""
    k = 4.0
    x0, _ = toy_models.grid_points(40, (-3.0, 3.0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    samples, acc = toy_models.metropolis_hastings(lambda x: 0.5 * k * (x ** 2).sum(1), x0, n_burnin=100, n_record=40,
                                           step_sizes=(0.3, 1.0), box=(-3.0, 3.0), generator=gen)
    assert samples.shape == (40 * 1600, 2) and 0.1 < acc < 0.9
    assert samples.abs().max() <= 3.0
    mean, err = _standard_error(samples[:, 0] ** 2, 40, 1600)
    assert abs(mean - 1 / k) < 5 * err + 2e-3, (mean, err)


def test_metropolis_hastings_periodic_marginal():
    """u = -kappa cos x_1 on the torus [-pi, pi)^2: <cos x_1> = I1(kappa) / I0(kappa); samples wrapped."""
    kappa = 2.0
    box = (-math.pi, math.pi)
    x0, _ = toy_models.grid_points(40, box, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    samples, _ = toy_models.metropolis_hastings(lambda x: -kappa * torch.cos(x[:, 0]), x0, n_burnin=100, n_record=40,
                                         step_sizes=(0.5, 2.0), box=box, periodic=True, generator=gen)
    assert samples.min() >= -math.pi and samples.max() < math.pi
    exact = float(torch.special.i1(torch.tensor(kappa)) / torch.special.i0(torch.tensor(kappa)))
    mean, err = _standard_error(torch.cos(samples[:, 0]), 40, 1600)
    assert abs(mean - exact) < 5 * err + 2e-3, (mean, exact, err)
    mean2, err2 = _standard_error(torch.cos(samples[:, 1]), 40, 1600)  # x_2 is uniform
    assert abs(mean2) < 5 * err2 + 2e-3


@pytest.mark.parametrize("kind", ["smooth", "spline"])
@pytest.mark.parametrize("periodic", [False, True])
def test_log_prob_normalised(kind, periodic):
    scale = 0.3 if kind == "smooth" else 0.15  # splines get sharp at larger scales: quadrature error
    with torch.random.fork_rng():  # the same flow whatever ran before (its init draws from the global RNG)
        torch.manual_seed(0)
        flow = _randomize(toy_models.ToyFlow(kind, periodic, n_components=6, hidden=(16, 16)), scale=scale).double()
    x, cell = toy_models.grid_points(200, toy_models.BOX, dtype=torch.float64)
    with torch.no_grad():
        lp = flow.log_prob(x)
    assert lp.max() - lp.min() > 0.5  # far from uniform
    assert abs(float(lp.exp().sum() * cell) - 1.0) < 2e-3
    if periodic:
        with torch.no_grad():
            torch.testing.assert_close(flow.log_prob(x + 2 * math.pi), lp, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["smooth", "spline"])
def test_inverse_round_trip(kind):
    flow = _randomize(toy_models.ToyFlow(kind, False, n_components=6, hidden=(16, 16))).double()
    z = torch.rand(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = flow.inverse(z)
    assert x.min() >= -math.pi and x.max() <= math.pi
    with torch.no_grad():
        torch.testing.assert_close(flow(x)[0], z, rtol=0, atol=1e-5)
    assert flow.sample(8).shape == (8, 2)


@pytest.mark.parametrize("kind", ["smooth", "spline"])
@pytest.mark.parametrize("problem", ["rings", "torus"])
def test_training_decreases_nll(kind, problem):
    energy = toy_models.make_energy(problem)
    data, _ = toy_models.sample_problem(energy, n_side=20, n_burnin=200, n_record=5, seed=0)
    torch.manual_seed(0)
    flow = toy_models.ToyFlow(kind, energy.periodic, n_components=8, hidden=(32, 32))
    before = toy_models.mean_nll(flow, data)
    # starts near uniform on the box (bump mixtures at params == 0 are c = 1/2 blended with K spread bumps,
    # a few percent off the identity per layer: 0.1 on the rings, 0.7 on the torus after all layers)
    assert abs(before - 2 * math.log(2 * math.pi)) < 1.0
    losses = toy_models.train_nll(flow, data, n_iter=40, batch_size=256, lr=5e-3, progress=False)
    after = toy_models.mean_nll(flow, data)
    assert len(losses) == 40 and after < before - 0.1, (before, after)


def _max_jump_along_line(flow, n):
    """Largest |F(x_i+1) - F(x_i)| along x_1 in [-2.5, 2.5] at x_2 = 0.3, n points."""
    x = torch.stack([torch.linspace(-2.5, 2.5, n, dtype=torch.float64),
                     torch.full((n,), 0.3, dtype=torch.float64)], dim=1)
    f = flow.force(x)
    return float((f[1:] - f[:-1]).norm(dim=1).max())


@pytest.mark.parametrize("periodic", [False, True])
def test_smooth_force_has_no_jumps(periodic):
    """Refining the grid 10x shrinks the largest neighbour jump ~10x for the smooth flow (a continuous,
    differentiable force); the spline flow's force jumps at its knots, so its largest jump stays."""
    ratios = {}
    for kind in ("smooth", "spline"):
        flow = _randomize(toy_models.ToyFlow(kind, periodic, n_components=8, hidden=(16, 16)), seed=3).double()
        ratios[kind] = _max_jump_along_line(flow, 20001) / _max_jump_along_line(flow, 2001)
    assert ratios["smooth"] < 0.15, ratios
    assert ratios["spline"] > 0.5, ratios


def test_force_metrics_and_roughness():
    n = 64
    energy = toy_models.make_energy("rings")
    mask = toy.support_mask(energy, n)
    ref = toy.force_grid(energy.force, n)
    m = toy.force_metrics(ref.clone(), ref, mask)
    assert m["force_rmse"] == 0 and m["force_max_error"] == 0 and m["roughness"] == pytest.approx(1.0)
    bumped = ref.clone()
    bumped[mask.nonzero()[0][0], mask.nonzero()[0][1]] += torch.tensor([100.0, 0.0])
    m = toy.force_metrics(bumped, ref, mask)
    assert m["force_max_error"] == pytest.approx(100.0) and m["roughness"] > 2


def test_bench_command(tmp_path):
    from openmm_smoothflow.cli import main

    out, fig = tmp_path / "toy.json", tmp_path / "toy.png"
    rc = main(["bench", "toy", "--chains", "100", "--burnin", "20", "--record", "2", "--iterations", "3",
               "--batch-size", "64", "--components", "4", "--hidden", "8", "--grid", "24", "--quiver", "8",
               "--threads", "1", "--no-progress", "--out", str(out), "--figure", str(fig)])
    assert rc == 0 and fig.stat().st_size > 1000
    result = json.loads(out.read_text())["results"]
    assert set(result) == {"rings", "torus"}
    for res in result.values():
        assert set(res["flows"]) == {"spline", "smooth"}
        for entry in res["flows"].values():
            assert all(math.isfinite(entry[k]) for k in ("nll", "force_rmse", "force_max_error", "roughness"))
