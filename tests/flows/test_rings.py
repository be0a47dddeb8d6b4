"""The ring restraint (flows/rings.py): zero on the training data, in the energy and its analytic
backward (eager, scripted, exported), exact rejection samples of q_R with log Z_R, models without the
restraint load as before; and ring closure of ACE-PRO-NME samples after a short training on real MD."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from openmm import app, unit

from helpers import TINY_MODEL, randomize
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.flows.rings import RESTRAINT_KT_NM2, ring_closures
from openmm_smoothflow.units import kT

DATA = Path(__file__).resolve().parent.parent / "data"
F64 = torch.float64


@pytest.fixture(scope="module")
def pro():
    return app.PDBFile(str(DATA / "ace-pro-nme.pdb"))


@pytest.fixture(scope="module")
def pro_positions(pro):
    return torch.tensor(pro.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=F64)


def jittered(x0, n, scale, seed):
    return x0 + scale * torch.randn(n, *x0.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.fixture()
def pro_generator(pro, pro_positions):
    generator = randomize(BoltzmannGenerator.from_topology(pro.topology, **TINY_MODEL).double(), 0.1, seed=3)
    return generator.fit_ring_restraint(jittered(pro_positions, 64, 0.003, 1))


def stretched(generator, x0, n=3):
    """Frames whose ring-closing bond is 0.05 nm longer than in x0 (the restraint acts), others near x0."""
    a, b = ring_closures(generator.zmatrix)[0]
    x = jittered(x0, n, 0.003, 2)
    axis = (x[:, b] - x[:, a]) / torch.linalg.norm(x[:, b] - x[:, a], dim=-1, keepdim=True)
    x[:, b] += 0.05 * axis
    return x


def test_restraint_is_zero_on_the_fitted_frames_and_grows_outside(pro_generator, pro_positions):
    frames = jittered(pro_positions, 64, 0.003, 1)
    assert torch.equal(pro_generator.rings(frames), torch.zeros(64, dtype=F64))
    x = stretched(pro_generator, pro_positions)
    r = pro_generator.rings(x)
    assert bool((r > 0.5 * RESTRAINT_KT_NM2 * 0.03 ** 2).all())  # >= 0.03 nm past the range of the bond
    energy_without = pro_generator.energy(x) - r
    pro_generator.rings.hi.fill_(math.inf)  # R off: the energy is -log q alone
    torch.testing.assert_close(pro_generator.energy(x), energy_without, atol=1e-9, rtol=0)


def test_exported_energy_carries_the_restraint(pro_generator, pro, pro_positions, tmp_path):
    """The TorchScript export (analytic forces) gives the generator's energy and forces, restraint included."""
    from openmm_smoothflow.potential import FlowPotential
    from openmm_smoothflow.potential.torchscript import export

    path = tmp_path / "pro.pt"
    export(pro_generator, path)
    potential = FlowPotential(path)
    x = stretched(pro_generator, pro_positions, n=1)
    xs = x[0].clone().requires_grad_(True)
    with torch.jit.optimized_execution(False):
        energy = potential.module(xs)
        (grad,) = torch.autograd.grad(energy, xs)
    kt = kT(pro_generator.temperature)
    torch.testing.assert_close(energy / kt, pro_generator.energy(x)[0], atol=0, rtol=1e-10)
    torch.testing.assert_close(-grad / kt, pro_generator.force(x)[0], atol=1e-6, rtol=1e-8)
    rebuilt = potential.generator()
    assert torch.equal(rebuilt.rings.hi, pro_generator.rings.hi)


def test_models_stored_without_the_restraint_load_with_it_off(pro, pro_generator, pro_positions):
    state = {k: v for k, v in pro_generator.state_dict().items() if not k.startswith("rings.")}
    fresh = BoltzmannGenerator.from_topology(pro.topology, **TINY_MODEL).double()
    fresh.load_state_dict(state)
    assert bool(torch.isinf(fresh.rings.hi).all())
    x = stretched(pro_generator, pro_positions)
    torch.testing.assert_close(fresh.energy(x), pro_generator.energy(x) - pro_generator.rings(x), atol=1e-9, rtol=0)


def test_molecules_without_rings_have_no_restraint_state(ala2):
    generator = BoltzmannGenerator.from_topology(ala2.topology, **TINY_MODEL)
    assert generator.rings.n_pairs == 0 and not any(k.startswith("rings.") for k in generator.state_dict())


def test_shipped_models_give_the_energies_of_their_export(ala2):
    """The shipped exports were scripted before the ring restraint existed: the generator rebuilt from them
    now gives the same energies and forces."""
    from openmm_smoothflow.io import packaged
    from openmm_smoothflow.potential import FlowPotential

    with np.load(packaged("ala2-frames.npz")) as npz:
        frames = torch.tensor(npz["positions"][:3], dtype=F64)
    for name in ("ala2-smooth.pt", "ala2-spline.pt"):
        potential = FlowPotential(packaged(name))
        generator = potential.generator()
        kt = kT(generator.temperature)
        for x in frames:
            xs = x.clone().requires_grad_(True)
            with torch.jit.optimized_execution(False):  # the same graph without seconds of optimisation
                energy = potential.module(xs)
                (grad,) = torch.autograd.grad(energy, xs)
            torch.testing.assert_close(energy / kt, generator.energy(x[None])[0], atol=0, rtol=1e-12)
            torch.testing.assert_close(-grad / kt, generator.force(x[None])[0], atol=1e-7, rtol=1e-9)


def test_rejection_samples_are_those_of_the_restrained_density(pro, pro_generator):
    """Acceptance = E_q[exp(-R)] (an independent estimate agrees), log q_R = -energy - log Z_R, and the
    accepted ring bonds follow q exp(-R): their mean matches the importance-weighted mean under q."""
    generator = pro_generator
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        x, _ = generator.sample(2000, gen)
        d = generator.rings.distances(x)[:, 0]
        generator.rings.lo.fill_(0.0)  # only the closing bond restrained, to a window that keeps ~1/3
        generator.rings.hi.fill_(math.inf)
        generator.rings.lo[0], generator.rings.hi[0] = float(d.quantile(0.3)), float(d.quantile(0.6))
        weight = torch.exp(-generator.rings(x))
        xr, log_qr, info = generator.sample_restrained(1000, gen)
    assert xr.shape == (1000, generator.zmatrix.n_atoms, 3)
    expected = float(weight.mean())
    spread = 4 * math.sqrt(expected * (1 - expected) / 2000) + 4 * math.sqrt(expected * (1 - expected) / info["draws"])
    assert abs(info["acceptance"] - expected) < spread and info["log_z"] == pytest.approx(math.log(info["acceptance"]))
    with torch.no_grad():
        torch.testing.assert_close(log_qr, -generator.energy(xr) - info["log_z"], atol=1e-8, rtol=0)
        dr = generator.rings.distances(xr)[:, 0]
    weighted = float((weight * d).sum() / weight.sum())
    ess = float(weight.sum() ** 2 / (weight ** 2).sum())
    se = float(d.std()) * (1 / math.sqrt(ess) + 1 / math.sqrt(1000))
    assert abs(float(dr.mean()) - weighted) < 4 * se, (float(dr.mean()), weighted, se)
    lo, hi = float(generator.rings.lo[0]) - 0.005, float(generator.rings.hi[0]) + 0.005
    inside_r, inside_q = float(((dr > lo) & (dr < hi)).double().mean()), float(((d > lo) & (d < hi)).double().mean())
    assert inside_r > 0.95 and inside_q < 0.5  # the test tells q_R from q


def test_rejection_sampling_fails_clearly_when_nothing_is_accepted(pro_generator):
    from openmm_smoothflow.errors import RunFailed

    pro_generator.rings.lo.fill_(5.0)  # no sample has a ring bond of 5 nm
    pro_generator.rings.hi.fill_(6.0)
    with pytest.raises(RunFailed, match="accepted"):
        pro_generator.sample_restrained(10, torch.Generator().manual_seed(0), max_draws=200)


# ------------------------------------------------------------------ ring closure after a short training
@pytest.fixture(scope="module")
def pro_md(pro):
    """A short real OpenMM run of ACE-PRO-NME (the data protocol's force field, Langevin 300 K, 1 fs): 800
    frames, one every 50 steps, positions (800, 26, 3) nm float32."""
    import openmm

    from openmm_smoothflow.md.systems import classical_system

    system = classical_system(pro.topology)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtoseconds)
    integrator.setRandomNumberSeed(5)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pro.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 5)
    integrator.step(2000)
    frames = []
    for _ in range(800):
        integrator.step(50)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return torch.tensor(np.array(frames), dtype=torch.float32)


@pytest.mark.parametrize("steps, model, n_samples, min_acceptance", [
    (250, TINY_MODEL, 300, 0.02),
    pytest.param(300, dict(hidden=[32, 32], n_torsion_layers=4, n_ic_layers=2), 1000, 0.1, marks=pytest.mark.slow),
])
def test_pro_ring_stays_closed_after_a_short_training(pro, pro_md, steps, model, n_samples, min_acceptance):
    """After a short NLL training on 800 MD frames, >= 99% of the flow's samples (of q_R, the density of
    its energy) have the ring-closing bond CG-CD within the data's range +- 0.03 nm; the unrestrained
    flow already closes most rings, so the rejection step accepts a fair share (log Z_R = log of it)."""
    torch.manual_seed(0)
    generator = BoltzmannGenerator.from_topology(pro.topology, **model)
    generator.fit_ring_restraint(pro_md)
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3)
    batches = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = generator(pro_md[torch.randint(0, len(pro_md), (128,), generator=batches)]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    (a, b), = ring_closures(generator.zmatrix)
    data = torch.linalg.norm(pro_md[:, a] - pro_md[:, b], dim=-1)
    lo, hi = float(data.min()) - 0.03, float(data.max()) + 0.03
    with torch.no_grad():
        x, _, info = generator.sample_restrained(n_samples, torch.Generator().manual_seed(2))
        xq, _ = generator.sample(n_samples, torch.Generator().manual_seed(3))

    def closed(y):
        d = (y[:, a] - y[:, b]).norm(dim=-1)
        return float(((d > lo) & (d < hi)).float().mean())

    print(f"closed: q_R {closed(x):.3f}, q {closed(xq):.3f}, acceptance {info['acceptance']:.3f}")
    assert closed(x) >= 0.99
    assert info["acceptance"] >= min_acceptance and closed(xq) >= 0.5
