"""Flow-MCMC of alanine dipeptide in OpenMM: the log weights of proposals and of MD states against
independent OpenMM and flow evaluations, weight 0 for inverted stereocentres, q = 0 outside the support."""
import numpy as np
import pytest
import torch
from helpers import TINY_MODEL, randomize
from openmm import unit

from openmm_smoothflow.bg.mcmc import run_chain
from openmm_smoothflow.bg.molecule import MoleculeSystem
from openmm_smoothflow.bg.states import get_definition
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.md.systems import classical_system, evaluate_frames, make_context
from openmm_smoothflow.units import kT


@pytest.fixture(scope="module")
def tiny_flow(ala2):
    return randomize(BoltzmannGenerator.from_topology(ala2.topology, **TINY_MODEL).double(), scale=0.05).eval()


@pytest.fixture
def system(ala2, tiny_flow):
    x = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    with MoleculeSystem(tiny_flow, ala2.topology, x, 300.0, get_definition("basins"), seed=3) as s:
        yield s, x


def _reference_u(ala2, x):
    context = make_context(classical_system(ala2.topology))
    return evaluate_frames(context, np.asarray(x))[0] / kT(300.0)


def test_proposal_weights_are_target_minus_flow(ala2, tiny_flow, system):
    s, _ = system
    xs, lw, reasons = s.propose(16)
    with torch.no_grad():
        u_flow = tiny_flow.energy(torch.as_tensor(xs)).numpy()   # -log q, density direction
    expected = -_reference_u(ala2, xs) + u_flow
    ok = np.isfinite(lw)
    chiral = s.chirality_ok(xs)
    assert reasons["inverted_stereocentre"] == int((~chiral).sum())
    assert (ok == (chiral & np.isfinite(expected))).all() and ok.any()
    np.testing.assert_allclose(lw[ok], expected[ok], rtol=1e-6, atol=1e-5)
    assert sum(reasons.values()) >= int((~ok).sum())


def test_md_state_weight_and_the_support(ala2, tiny_flow, system):
    s, x0 = system
    x = s.local(x0, 20, True)
    assert not np.allclose(x, x0)
    with torch.no_grad():
        u_flow = float(tiny_flow.energy(torch.as_tensor(x[None]))[0])
    assert s.log_weight(x) == pytest.approx(-_reference_u(ala2, x[None])[0] + u_flow, rel=1e-9)
    stretched = x.copy()
    stretched[1] += 0.5  # a bond far outside the flow's range: q = 0, every proposal from here is rejected
    assert s.flow_log_q(stretched[None])[0] == -np.inf and s.log_weight(stretched) == np.inf
    assert not s.chirality_ok((x * np.array([-1.0, 1.0, 1.0]))[None])[0]   # the mirror image


def test_chain_on_the_molecule(system):
    s, x0 = system
    result = run_chain(s, s.minimize(), 6, local_steps=5, mh_per_cycle=2, batch=4, seed=1)
    assert result.cycles == 6 and len(result.accepted) == 12 == len(result.proposal_log_w)
    assert result.features.shape == (6, 2) and result.proposals_drawn == 12
    assert set(result.labels.tolist()) <= {0, 1, 2}


def test_worker_processes_give_the_same_weights(ala2, tiny_flow):
    """Proposals scored by OpenMM worker processes (``--workers``) equal those scored in process."""
    x = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    weights = []
    for n_workers in (0, 2):
        with MoleculeSystem(tiny_flow, ala2.topology, x, 300.0, get_definition("phi"), n_workers=n_workers,
                            seed=3) as s:
            weights.append(s.propose(16)[1])
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-12)
    assert np.isfinite(weights[0]).any()
