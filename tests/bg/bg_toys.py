"""Toy targets with exact answers for the flow-MCMC and reweighting tests (``from bg_toys import ...``).

Each implements ``bg.mcmc.ChainSystem``: a discrete target on K states, and a 1-D asymmetric double
well u(x) = a (x^2 - 1)^2 - b x (kT) with a Gaussian proposal of exact log density, whose local move
is a random-walk Metropolis step (it leaves exp(-u) invariant, as Langevin MD does for a molecule).
"""
import math

import numpy as np

from openmm_smoothflow.bg.mcmc import metropolis_accept


class DiscreteToy:
    """States 0..K-1 (as arrays (1,)), target exp(log_target), proposal q = exp(log_proposal)."""

    def __init__(self, log_target, log_proposal, seed=1, ignore_q=False):
        self.log_target = np.asarray(log_target, dtype=float)
        self.log_proposal = np.asarray(log_proposal, dtype=float)
        self.rng = np.random.default_rng(seed)
        self.ignore_q = ignore_q  # a wrong weight (the target alone), for negative controls

    def _lw(self, k):
        return self.log_target[k] - (0.0 if self.ignore_q else self.log_proposal[k])

    def propose(self, n):
        k = self.rng.choice(len(self.log_target), size=n, p=np.exp(self.log_proposal))
        return k[:, None].astype(float), self._lw(k), {}

    def log_weight(self, x):
        return float(self._lw(int(x[0])))

    def local(self, x, n_steps, moved):  # symmetric +-1 random walk on the ring with MH acceptance
        k = int(x[0])
        for _ in range(n_steps):
            j = (k + (1 if self.rng.random() < 0.5 else -1)) % len(self.log_target)
            if metropolis_accept(self.log_target[k], self.log_target[j], self.rng):
                k = j
        return np.array([float(k)])

    def observe(self, x):
        k = np.asarray(x)[:, 0].astype(np.int64)
        return k, k[:, None].astype(float)


class DoubleWell:
    """u(x) = a (x^2 - 1)^2 - b x in kT; states x < 0 (0) and x > 0 (1); proposal N(mu, sigma^2)."""

    def __init__(self, a=2.0, b=1.0, mu=-0.3, sigma=1.0, step=0.3, seed=2, ignore_q=False):
        self.a, self.b, self.mu, self.sigma, self.step = a, b, mu, sigma, step
        self.rng = np.random.default_rng(seed)
        self.ignore_q = ignore_q

    def u(self, x):
        x = np.asarray(x, dtype=float)
        return self.a * (x ** 2 - 1) ** 2 - self.b * x

    def log_q(self, x):
        x = np.asarray(x, dtype=float)
        return -0.5 * ((x - self.mu) / self.sigma) ** 2 - math.log(self.sigma * math.sqrt(2 * math.pi))

    def exact_population(self, exact_mean_of=None):
        """P(x > 0) (or the exact mean of ``exact_mean_of(x)``) by quadrature on a fine grid."""
        x = np.linspace(-6, 6, 400_001)
        p = np.exp(-self.u(x))
        f = (x > 0).astype(float) if exact_mean_of is None else exact_mean_of(x)
        return float((p * f).sum() / p.sum())

    def sample_proposals(self, n):
        return self.mu + self.sigma * self.rng.standard_normal(n)

    def _lw(self, x):
        return -self.u(x) - (0.0 if self.ignore_q else self.log_q(x))

    def propose(self, n):
        x = self.sample_proposals(n)
        return x[:, None], self._lw(x), {}

    def log_weight(self, x):
        return float(self._lw(x[0]))

    def local(self, x, n_steps, moved):
        y = float(x[0])
        for _ in range(n_steps):
            z = y + self.step * self.rng.standard_normal()
            if metropolis_accept(-self.u(y), -self.u(z), self.rng):
                y = z
        return np.array([y])

    def observe(self, x):
        x = np.asarray(x)[:, 0]
        return (x > 0).astype(np.int64), x[:, None]
