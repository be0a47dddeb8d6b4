"""The bump mixture's parametrisation (the paper's reference code): bounded concentration, ramp slope
above the unimodality bound, the uniform part's floor, c = 1/2 at params == 0, beta = 1 by default."""
import math

import pytest
import torch

from openmm_smoothflow.transforms import BumpMixture, generalized_sigmoid
from openmm_smoothflow.transforms.bump import UNIMODAL_SLOPE

F64 = torch.float64
EXTREME = torch.tensor([-80.0, -20.0, -3.0, 0.0, 3.0, 20.0, 80.0], dtype=F64)


def constrained_at(t: BumpMixture, raw: torch.Tensor):
    """(a, b, c, alpha, w) with every raw param of every component set to the values ``raw`` (n,)."""
    params = raw.view(1, -1, 1).expand(1, raw.numel(), t.n_params)
    return t.constrained(params)


def test_defaults_are_the_papers():
    t = BumpMixture(8)
    assert t.beta == 1 and t.c_min == 1e-6 and t.c_offset == 0.0 and t.slope_max == 10.0


@pytest.mark.parametrize("circular", [False, True])
def test_concentration_is_bounded(circular):
    a = constrained_at(BumpMixture(4, circular=circular), EXTREME)[0]
    lo = 1.0 if circular else math.exp(-1.0)  # the circle needs a >= 1 (support at most 1 wide)
    assert a.min() >= lo - 1e-12 and a.max() <= math.e + 1e-12
    assert a.min() < lo + 1e-6 and a.max() > math.e - 1e-6  # the whole range is reachable
    if not circular:  # exp(tanh(0)) = 1
        torch.testing.assert_close(a[0, 3], torch.ones(4, dtype=F64))


@pytest.mark.parametrize("beta", [1, 2])
def test_ramp_slope_range(beta):
    """k = 2/alpha = 2 lambda with lambda = 10 sigmoid(raw) + the unimodality bound."""
    alpha = constrained_at(BumpMixture(4, beta=beta), EXTREME)[3]
    lam = 1.0 / alpha
    assert lam.min() >= UNIMODAL_SLOPE[beta] - 1e-12 and lam.max() <= UNIMODAL_SLOPE[beta] + 10.0 + 1e-12
    torch.testing.assert_close(lam[0, 3], torch.full((4,), UNIMODAL_SLOPE[beta] + 5.0, dtype=F64))


def _n_maxima(lam: float, beta: int) -> int:
    """Number of local maxima of the density sigma[rho]' on (0, 1) at ramp slope lam = 1/alpha."""
    t = torch.linspace(1e-4, 1 - 1e-4, 40001, dtype=F64)
    _, logd = generalized_sigmoid(t, torch.tensor(1.0 / lam, dtype=F64), beta=beta)
    d = logd.exp()
    rising = d[1:] > d[:-1]
    return int((rising[:-1] & ~rising[1:]).sum())


@pytest.mark.parametrize("beta", [1, 2])
def test_every_bump_is_unimodal(beta):
    lam = 1.0 / constrained_at(BumpMixture(2, beta=beta), EXTREME[2:])[3][0, :, 0]
    lam = torch.cat([lam, torch.tensor([1.001 * UNIMODAL_SLOPE[beta]], dtype=F64)])  # (at the bound: flat top)
    assert all(_n_maxima(float(v), beta) == 1 for v in lam)
    # the bound is sharp: below it the density has two maxima (what the old floor alpha >= 0.01 allowed
    # in the other direction, and alpha = 10 sigmoid + 0.866 read as our alpha would give everywhere)
    assert _n_maxima(0.9 * UNIMODAL_SLOPE[beta], beta) == 2
    assert _n_maxima(1.0 / (10.0 + 0.866), beta) == 2


@pytest.mark.parametrize("circular", [False, True])
def test_uniform_floor_and_start(circular):
    t = BumpMixture(4, circular=circular)
    c = constrained_at(t, EXTREME)[2]
    assert c.min() >= 1e-6 * (1 - 1e-9) and c.min() < 1.01e-6  # floor 1e-6 (was 1e-3), reached
    torch.testing.assert_close(c[0, 3], torch.full((4,), 0.5, dtype=F64), atol=1e-6, rtol=0)  # c = 1/2 at 0
    # the density never drops below the floor: f' >= c_min everywhere, even for the sharpest bumps
    params = torch.full((1, 101, t.n_params), 80.0, dtype=F64)
    params[..., 2 * 4:3 * 4] = -80.0  # c at its floor
    _, logd = t(torch.linspace(0, 1, 101, dtype=F64).view(1, -1), params)
    assert logd.min() >= math.log(1e-6) - 1e-6
