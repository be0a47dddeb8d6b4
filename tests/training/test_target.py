"""md/target.py: batched OpenMM energies/forces in kT, the autograd wrapper, workers, the SI-2.5 cut-off."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from openmm_smoothflow.md import systems
from openmm_smoothflow.training.losses import energy_cutoff
from openmm_smoothflow.training.target import OpenMMTarget, OpenMMWorkerError
from openmm_smoothflow.units import kT

T = 300.0


@pytest.fixture(scope="module")
def system():
    return systems.classical_system(systems.load_pdb(systems.alanine_dipeptide_pdb()).topology)


@pytest.fixture(scope="module")
def positions():
    pdb = systems.load_pdb(systems.alanine_dipeptide_pdb())
    x0 = torch.tensor(np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
    gen = torch.Generator().manual_seed(0)
    return x0[None] + 0.005 * torch.randn(6, 22, 3, generator=gen, dtype=torch.float64)


@pytest.fixture(scope="module")
def target(system):
    with OpenMMTarget(system, T) as t:
        yield t


@pytest.fixture(scope="module")
def workers(system):
    with OpenMMTarget(system, T, n_workers=2) as t:
        yield t


def _direct(system, x):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), systems.get_platform("Reference"))
    energies, forces = [], []
    for frame in x.numpy():
        context.setPositions(frame)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return np.array(energies), np.array(forces)


def _gone(pid, timeout=10.0):
    """True once ``pid`` no longer runs (absent or a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


def test_matches_direct_context(system, target, positions):
    e, f = target.energy_and_force(positions)
    e_ref, f_ref = _direct(system, positions)
    assert e.shape == (6,) and f.shape == (6, 22, 3) and e.dtype == torch.float64
    np.testing.assert_allclose(e.numpy() * kT(T), e_ref, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(f.numpy() * kT(T), f_ref, rtol=1e-10, atol=1e-8)
    # float32 in, float32 out; flattened (B, 3N) in, flattened forces out
    e32, f32 = target.energy_and_force(positions.float().reshape(6, 66))
    assert e32.dtype == torch.float32 and f32.shape == (6, 66)
    np.testing.assert_allclose(f32.numpy().reshape(6, 22, 3), f.numpy(), rtol=1e-3, atol=0.05)
    with pytest.raises(ValueError, match=r"\(B, 22, 3\)"):
        target.energy_and_force(positions[:, :5])


def test_forces_are_minus_energy_gradient(target, positions):
    """Finite differences: energies in kT and forces in kT/nm are consistent."""
    x = positions[:1]
    _, f = target.energy_and_force(x)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-6
    ep, _ = target.energy_and_force(x + h * d)
    em, _ = target.energy_and_force(x - h * d)
    assert ((ep - em) / (2 * h)).item() == pytest.approx(-(f * d).sum().item(), rel=1e-5)


def test_autograd_gradient_is_minus_force(target, positions):
    x = positions.clone().requires_grad_(True)
    u = target.target_energy(x)
    w = torch.arange(1.0, 7.0, dtype=torch.float64)
    (w * u).sum().backward()
    _, f = target.energy_and_force(positions)
    torch.testing.assert_close(x.grad, -w[:, None, None] * f)
    x2 = positions.clone().requires_grad_(True)
    target(x2).sum().backward()
    torch.testing.assert_close(x2.grad, -f)


def test_non_finite_positions(target, workers, positions):
    x = positions.clone()
    x[1, 3, 0] = float("nan")
    x[2, 0, 2] = float("inf")
    for t in (target, workers):
        e, f = t.energy_and_force(x)
        assert math.isinf(e[1].item()) and math.isinf(e[2].item()) and torch.isfinite(e[[0, 3, 4, 5]]).all()
        assert not torch.isnan(f).any() and (f[1:3] == 0).all()
    xr = x.clone().requires_grad_(True)
    energy_cutoff(target.target_energy(xr)).sum().backward()
    assert torch.isfinite(xr.grad).all()


def test_workers_match_in_process(target, workers, positions):
    e, f = target.energy_and_force(positions)
    e2, f2 = workers.energy_and_force(positions)
    torch.testing.assert_close(e2, e, rtol=0, atol=0)
    torch.testing.assert_close(f2, f, rtol=0, atol=0)
    e1, f1 = workers.energy_and_force(positions[:1])  # fewer frames than workers
    torch.testing.assert_close(e1, e[:1], rtol=0, atol=0)
    assert workers.energy_and_force(positions[:0])[0].shape == (0,)
    x = positions.clone().requires_grad_(True)
    workers.target_energy(x).sum().backward()
    torch.testing.assert_close(x.grad, -f)


def test_worker_error_propagates(system, workers):
    # an exception raised inside a worker (a malformed request that bypasses the parent's checks)
    with pytest.raises(OpenMMWorkerError, match="positions must have shape"):
        workers._compute_workers(np.zeros((2, 5, 3)))
    assert workers.energy_and_force(torch.zeros(1, 22, 3) + 0.1 * torch.arange(22.0)[:, None])[0].shape == (1,)
    # a worker that cannot build its Context reports the OpenMM error at start-up
    bad = openmm.XmlSerializer.clone(system)
    force = openmm.CustomExternalForce("undefined_variable * x")
    force.addParticle(0, [])
    bad.addForce(force)
    with pytest.raises(OpenMMWorkerError, match="(?s)failed to start.*Unknown variable"):
        OpenMMTarget(bad, T, n_workers=2)


def test_dead_worker_raises_and_cleans_up(system, positions):
    t = OpenMMTarget(system, T, n_workers=2)
    pids = t.worker_pids
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(OpenMMWorkerError, match="died"):
        t.energy_and_force(positions)
    assert all(_gone(p) for p in pids)
    with pytest.raises(RuntimeError, match="closed"):
        t.energy_and_force(positions)


def test_close_and_garbage_collection(system):
    t = OpenMMTarget(system, T, n_workers=1)
    pids = t.worker_pids
    t.close()
    t.close()
    assert all(_gone(p) for p in pids)
    t = OpenMMTarget(system, T, n_workers=1)
    pids = t.worker_pids
    del t
    assert all(_gone(p) for p in pids)


_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from openmm import unit
    from openmm_smoothflow.md import systems
    from openmm_smoothflow.training.target import OpenMMTarget
    pdb = systems.load_pdb(systems.alanine_dipeptide_pdb())
    x = torch.tensor(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[None].repeat(64, 1, 1)
    target = OpenMMTarget(systems.classical_system(pdb.topology), 300.0, n_workers=2)
    print(json.dumps(target.worker_pids), flush=True)
    while True:
        target.energy_and_force(x)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_parent_interrupted_leaves_no_workers(sig):
    # SIGINT back to its default in the child: a shell's background job starts with it ignored
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        pids = json.loads(line)
        time.sleep(0.3)  # in the middle of the loop
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)  # reads the pipes: a full stderr pipe cannot block the exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert all(_gone(p) for p in pids), "worker processes left behind"


def test_energy_cutoff_values():
    u = torch.tensor([-5.0, 0.0, 500.0, 1e3, 2e3, 1e12, math.inf, math.nan], dtype=torch.float64)
    out = energy_cutoff(u)
    expected = [-5.0, 0.0, 500.0, 1e3, 1e3 + math.log(1001.0), 1e3 + math.log1p(1e12 - 1e3), 1e9, 1e9]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    assert energy_cutoff(torch.tensor([1e12]), low=10.0, high=20.0).item() == 20.0
    assert energy_cutoff(torch.tensor([1e12], dtype=torch.float32)).dtype == torch.float32


def test_energy_cutoff_monotone_and_gradients():
    grid = torch.cat([torch.linspace(-10, 3e3, 2001), torch.logspace(4, 300, 200)]).double()
    out = energy_cutoff(grid)
    assert (out[1:] >= out[:-1]).all() and torch.isfinite(out).all()
    u = torch.tensor([500.0, 1e3, 2e3, 1e12, math.inf, math.nan], dtype=torch.float64, requires_grad=True)
    energy_cutoff(u).sum().backward()
    assert torch.isfinite(u.grad).all()
    np.testing.assert_allclose(u.grad.numpy(), [1.0, 1.0, 1 / 1001.0, 1 / (1e12 - 999.0), 0.0, 0.0], rtol=1e-9)
