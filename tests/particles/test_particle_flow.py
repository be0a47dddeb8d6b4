"""The equivariant flow: symmetries in float64, the exact Jacobian, normalisation of q."""
import copy
import math

import pytest
import torch

from openmm_smoothflow.particles.cnf import EquivariantCNF
from openmm_smoothflow.particles.egnn import off_diagonal
from openmm_smoothflow.particles.md import flow_samples_ess
from openmm_smoothflow.particles.systems import DW4
from openmm_smoothflow.particles.train import evaluate, signed_nll

from particle_helpers import random_flow, random_orthogonal


def _x(n, M, d, seed):
    g = torch.Generator().manual_seed(seed)
    return (1.5 if d == 2 else 0.8) * torch.randn(n, M, d, generator=g, dtype=torch.float64) + \
        torch.arange(M, dtype=torch.float64)[None, :, None] * 0.3


def _energy_forces(flow, x):
    x = x.clone().requires_grad_(True)
    u = flow(x)
    (g,) = torch.autograd.grad(u.sum(), x)
    return u.detach(), -g


@pytest.mark.parametrize("which", ["dw4_flow", "lj13_flow"])
def test_energy_invariant_forces_equivariant(which, request):
    flow = request.getfixturevalue(which)
    M, d = flow.n_particles, flow.dim
    x = _x(2, M, d, 0)
    u, f = _energy_forces(flow, x)
    assert torch.isfinite(u).all() and u.abs().max() > 1
    g = torch.Generator().manual_seed(5)
    for reflect in (False, True):
        R = random_orthogonal(d, g, reflect)
        t = torch.randn(1, 1, d, generator=g, dtype=torch.float64) * 3
        perm = torch.randperm(M, generator=g)
        y = (x @ R.T + t)[:, perm]
        u2, f2 = _energy_forces(flow, y)
        assert (u2 - u).abs().max() < 1e-10
        torch.testing.assert_close(f2, (f @ R.T)[:, perm], rtol=0, atol=1e-9)


def test_forces_sum_to_zero_and_velocity_mean_free(dw4_flow):
    x = _x(3, 4, 2, 1)
    _, f = _energy_forces(dw4_flow, x)
    assert f.sum(1).abs().max() < 1e-10
    v = dw4_flow.dynamics(x, torch.tensor(0.3, dtype=torch.float64))
    assert v.mean(1).abs().max() < 1e-12
    assert (dw4_flow.flow_map(x).mean(1) - x.mean(1)).abs().max() < 1e-12


@pytest.mark.parametrize("which", ["dw4_flow", "lj13_flow"])
def test_exact_jacobian_of_the_rk4_map(which, request):
    flow = request.getfixturevalue(which)
    M, d = flow.n_particles, flow.dim
    x = _x(2, M, d, 2)
    x = x - x.mean(1, keepdim=True)
    z, jac = flow.map_and_jacobian(x)
    for b in range(2):
        J = torch.autograd.functional.jacobian(lambda y: flow.flow_map(y[None])[0].reshape(-1), x[b])
        torch.testing.assert_close(jac[b], J.reshape(M * d, M * d), rtol=0, atol=1e-10)
    # the map is the identity orthogonal to the CoM-free subspace: translations pass through unchanged
    shift = torch.ones(1, 1, d, dtype=torch.float64) * 0.7
    torch.testing.assert_close(flow.flow_map(x + shift), z + shift, rtol=0, atol=1e-12)


@pytest.mark.parametrize("which", ["dw4_flow", "lj13_flow"])
def test_forward_mode_and_replica_jacobians_agree(which, request):
    """Eager code differentiates the map in forward mode, the TorchScript export over replicas: same Jacobian."""
    flow = request.getfixturevalue(which)
    M, d = flow.n_particles, flow.dim
    x = _x(3, M, d, 7)
    x = x - x.mean(1, keepdim=True)
    z1, j1 = flow.map_and_jacobian(x)
    z2, j2 = flow.jacobian_by_replicas(x)
    torch.testing.assert_close(z1, z2.detach(), rtol=0, atol=1e-13)
    torch.testing.assert_close(j1, j2.detach(), rtol=0, atol=1e-12)
    assert (j1 - torch.eye(M * d, dtype=x.dtype)).abs().max() > 1e-3  # not the identity map
    scripted = torch.jit.script(flow)  # replicas inside
    torch.testing.assert_close(scripted(x).detach(), flow(x).detach(), rtol=0, atol=1e-10)


def test_off_diagonal_keeps_the_pairs_j_ne_i_in_order():
    M = 5
    a = torch.arange(2 * M * M * 3).reshape(2, M, M, 3)
    out = off_diagonal(a)
    assert out.shape == (2, M, M - 1, 3)
    for i in range(M):
        torch.testing.assert_close(out[:, i], a[:, i, [j for j in range(M) if j != i]])


def test_folds_are_reported_and_the_signed_loss_does_not_deepen_them():
    """A map that folds (det < 0) is flagged by evaluate; at a folded configuration a gradient step on the
    training loss shrinks |det| (towards unfolding), while one on the plain NLL would grow it."""
    flow = random_flow(4, 2, n_steps=1, scale=0.3, seed=0)  # a fixed-step map that folds on ~1/3 of these
    x = _x(200, 4, 2, 8)
    nll, sign = flow.nll_and_sign(x)
    folded = sign < 0
    assert folded.any() and (~folded).any()
    assert evaluate(flow, x)["folded"] == pytest.approx(float(folded.double().mean()))
    torch.testing.assert_close(signed_nll(flow, x[~folded]), nll[~folded].mean())  # no fold: the NLL
    xf = x[folded][:1]

    def log_abs_det_after_a_step(loss_fn):
        f = copy.deepcopy(flow)
        f.zero_grad()
        loss_fn(f, xf).backward()
        with torch.no_grad():
            for p in f.parameters():
                if p.grad is not None:
                    p.sub_(1e-4 * p.grad)
        with torch.no_grad():
            return float(f.log_prob_terms(xf)[1])

    with torch.no_grad():
        before = float(flow.log_prob_terms(xf)[1])
    assert log_abs_det_after_a_step(signed_nll) < before
    assert log_abs_det_after_a_step(lambda f, y: -f.log_prob(y).mean()) > before


def test_exact_log_det_approaches_the_cnf_quadrature_with_many_steps():
    """The discrete map's exact log-density converges to the continuous flow's (RK4 quadrature of div)."""
    flow = random_flow(4, 2, n_steps=16, scale=0.2, seed=2)
    x = _x(3, 4, 2, 6)
    exact = flow.log_prob(x).detach()
    quad = flow.log_prob_quadrature(x)
    torch.testing.assert_close(exact, quad, rtol=0, atol=2e-3)
    few = random_flow(4, 2, n_steps=1, scale=0.2, seed=2)
    assert (few.log_prob(x).detach() - few.log_prob_quadrature(x)).abs().max() > 1e-6  # not the same quantity


def _importance_normalisation(flow, n, sigma=1.6, seed=11):
    """int q = E_g[q / g] with an independent Gaussian proposal g on the 6-dim CoM-free subspace."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, 2, generator=g, dtype=torch.float64) * sigma
    z = z - z.mean(1, keepdim=True)
    log_g = -0.5 * z.pow(2).sum((1, 2)) / sigma ** 2 - 0.5 * 6 * math.log(2 * math.pi * sigma ** 2)
    w = torch.exp(-flow.nll(z, batch_size=500) - log_g)
    return w.mean().item(), (w.std() / math.sqrt(n)).item(), w.std().item()


def test_log_q_is_normalised_importance_sampling_dw4():
    mean, err, spread = _importance_normalisation(random_flow(4, 2, n_steps=2, scale=0.2, seed=3), 1000)
    assert abs(mean - 1.0) < 4 * err + 0.01, (mean, err)
    assert spread > 0.05  # the flow is not the base density: the weights really vary


@pytest.mark.slow
def test_log_q_is_normalised_importance_sampling_dw4_many_samples():
    mean, err, _ = _importance_normalisation(random_flow(4, 2, n_steps=2, scale=0.3, seed=4), 20000)
    assert abs(mean - 1.0) < 4 * err + 0.01, (mean, err)


def test_sampling_inverts_the_map_exactly():
    flow = random_flow(4, 2, n_steps=2, scale=0.2, seed=3)
    x, log_q_sample = flow.sample(20, torch.Generator().manual_seed(0))
    assert flow.last_inversion_residual < 1e-9
    torch.testing.assert_close(-flow.nll(x, batch_size=20), log_q_sample, rtol=0, atol=1e-9)


def test_ess_samples_are_newton_refined_inverses_of_the_map():
    flow = random_flow(4, 2, n_steps=2, scale=0.2, seed=3)
    refined = flow_samples_ess(flow, DW4, 30, seed=1, batch_size=10)
    assert refined["n"] == 30 and refined["max_inversion_residual"] < 1e-9
    assert 0 < refined["kish_ess_fraction"] <= 1
    rough = flow_samples_ess(flow, DW4, 30, seed=1, batch_size=10, newton_steps=0)  # reverse RK4 alone
    assert rough["max_inversion_residual"] > 1e3 * refined["max_inversion_residual"]


def test_nll_counts_subspace_dimensions():
    flow = EquivariantCNF(4, 2, n_steps=1).double()
    with torch.no_grad():  # make the velocity field exactly zero: q is the base density
        for layer in flow.dynamics.layers:
            layer.coord_mlp[-1].weight.zero_()
    z = _x(3, 4, 2, 4)
    z = z - z.mean(1, keepdim=True)
    expected = 0.5 * z.pow(2).sum((1, 2)) + 0.5 * 6 * math.log(2 * math.pi)
    torch.testing.assert_close(flow.nll(z), expected, rtol=0, atol=1e-12)
