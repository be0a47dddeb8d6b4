"""The flow-MCMC move: detailed balance on a discrete toy (the exact transition matrix from the
acceptance code the chain uses), and chains with known stationary distributions."""
import numpy as np
import pytest
from bg_toys import DiscreteToy, DoubleWell

from openmm_smoothflow.bg.autocorr import se_factor
from openmm_smoothflow.bg.mcmc import log_acceptance, metropolis_accept, run_chain, transition_matrix
from openmm_smoothflow.bg.reweight import state_estimates


def _toy(k=6, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    log_target = scale * rng.standard_normal(k)  # unnormalised
    q = rng.dirichlet(np.ones(k))
    return log_target, np.log(q)


def test_detailed_balance_of_the_exact_transition_matrix():
    log_target, log_q = _toy()
    p = transition_matrix(log_target, log_q)
    pi = np.exp(log_target - log_target.max())
    pi /= pi.sum()
    assert (p >= -1e-15).all() and np.allclose(p.sum(axis=1), 1.0)
    flux = pi[:, None] * p
    np.testing.assert_allclose(flux, flux.T, atol=1e-14)   # pi_i P_ij = pi_j P_ji
    np.testing.assert_allclose(pi @ p, pi, atol=1e-14)     # pi P = pi
    # pi is the only stationary distribution (q > 0 everywhere: one eigenvalue 1, the rest inside the circle)
    values, vectors = np.linalg.eig(p.T)
    order = np.argsort(-np.abs(values))
    assert abs(values[order[0]] - 1) < 1e-12 and np.abs(values[order[1]]) < 1 - 1e-6
    stationary = np.real(vectors[:, order[0]])
    np.testing.assert_allclose(stationary / stationary.sum(), pi, atol=1e-12)


def test_a_wrong_weight_breaks_detailed_balance():
    """Negative control: accepting with the target ratio alone (ignoring q) leaves pi * q invariant, not pi."""
    log_target, log_q = _toy()
    q = np.exp(log_q)
    wrong = q[None, :] * np.exp(log_acceptance(log_target[:, None], log_target[None, :]))
    np.fill_diagonal(wrong, 0.0)
    np.fill_diagonal(wrong, 1.0 - wrong.sum(axis=1))
    pi = np.exp(log_target - log_target.max())
    pi /= pi.sum()
    assert np.abs(pi @ wrong - pi).max() > 1e-3


def test_log_acceptance_of_weight_zero_and_infinite_states():
    assert log_acceptance(0.0, -np.inf) == -np.inf            # a clash is never accepted
    assert log_acceptance(0.0, np.nan) == -np.inf
    assert log_acceptance(np.inf, 5.0) == -np.inf             # q(x) = 0 at x: the reverse move is impossible
    assert log_acceptance(-np.inf, 1.0) == 0.0                # from a zero-weight state, take any valid one
    assert log_acceptance(1.0, 3.0) == 0.0 and log_acceptance(3.0, 1.0) == -2.0
    rng = np.random.default_rng(0)
    rate = np.mean([metropolis_accept(0.0, np.log(0.3), rng) for _ in range(20000)])
    assert abs(rate - 0.3) < 0.015


@pytest.mark.parametrize("local_steps, mh_per_cycle", [(0, 1), (2, 1), (2, 4)])
def test_discrete_chain_samples_the_target(local_steps, mh_per_cycle):
    log_target, log_q = _toy(k=5, seed=3, scale=0.7)
    pi = np.exp(log_target - log_target.max())
    pi /= pi.sum()
    n = 20000 // mh_per_cycle
    result = run_chain(DiscreteToy(log_target, log_q), np.array([0.0]), n, local_steps, mh_per_cycle, batch=500, seed=4)
    est = state_estimates(result.labels, [str(k) for k in range(5)], 1.0, se_factor=se_factor)["populations"]
    for k in range(5):
        p, se = est[str(k)]["p"], est[str(k)]["se"]
        assert 0 < se < 0.02
        assert abs(p - pi[k]) < 4 * se, (k, p, pi[k], se)
    assert 0 < result.acceptance_rate < 1
    assert len(result.proposal_log_w) == n * mh_per_cycle == result.proposals_drawn == len(result.accepted)


def _double_well_chain(system, n_moves=20000, local_steps=3, seed=5):
    result = run_chain(system, np.array([-1.0]), n_moves, local_steps, 1, batch=1000, seed=seed)
    est = state_estimates(result.labels, ["x<0", "x>0"], 1.0, se_factor=se_factor)
    return result, est["populations"]["x>0"]


def test_double_well_chain_populations_agree_with_the_exact_ones():
    well = DoubleWell()
    exact = well.exact_population()
    result, est = _double_well_chain(well)
    assert 0.1 < exact < 0.9 and 0 < est["se"] < 0.02
    assert abs(est["p"] - exact) < 4 * est["se"], (est, exact)
    assert 0.05 < result.acceptance_rate < 0.95


def test_double_well_chain_without_local_moves_and_with_a_wrong_weight():
    well = DoubleWell()
    exact = well.exact_population()
    _, est = _double_well_chain(DoubleWell(seed=7), local_steps=0)
    assert abs(est["p"] - exact) < 4 * est["se"]
    _, wrong = _double_well_chain(DoubleWell(seed=7, ignore_q=True), local_steps=0)  # negative control
    assert abs(wrong["p"] - exact) > 6 * wrong["se"]


def test_plain_local_chain_and_bad_arguments():
    well = DoubleWell()
    result = run_chain(well, np.array([-1.0]), 50, 5, mh_per_cycle=0)
    assert result.cycles == 50 and len(result.accepted) == 0 and len(result.proposal_log_w) == 0
    assert np.isnan(result.acceptance_rate)
    with pytest.raises(ValueError):
        run_chain(well, np.array([-1.0]), 10, 0, mh_per_cycle=0)
    with pytest.raises(ValueError):
        run_chain(well, np.array([-1.0]), 0)


def test_max_seconds_stops_early():
    result = run_chain(DoubleWell(), np.array([-1.0]), 10**7, 1, batch=100, max_seconds=0.2)
    assert result.stopped_early and 0 < result.cycles < 10**7
    assert len(result.proposal_log_w) == result.cycles  # used proposals only; one per MH test
    result = run_chain(DoubleWell(), np.array([-1.0]), 10**7, 1, batch=100, max_cpu_seconds=0.2)
    assert result.stopped_early and 0.2 <= result.cpu_s < 5 and result.wall_s >= 0.9 * result.cpu_s
