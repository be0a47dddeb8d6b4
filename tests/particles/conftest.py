"""Fixtures for the particle-flow tests."""
import pytest

from openmm_smoothflow.particles.data import generate, save_dataset
from particle_helpers import random_flow


@pytest.fixture(scope="module")
def dw4_flow():
    return random_flow(4, 2)


@pytest.fixture(scope="module")
def lj13_flow():
    return random_flow(13, 3, hidden=8, n_layers=2, n_steps=1)


@pytest.fixture(scope="session")
def small_dw4(tmp_path_factory):
    """(path, positions, summary) of a small DW4 Metropolis dataset (2,100 configurations)."""
    x, summary = generate("dw4", 2100, n_chains=300, burn_in=800, pilot=300, seed=1, progress=False)
    path = tmp_path_factory.mktemp("dw4data") / "dw4.npz"
    save_dataset(path, "dw4", x, summary)
    return path, x, summary
