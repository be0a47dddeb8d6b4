"""openmm-ml mixed systems: the flow on alanine dipeptide in a PME box of amber14/tip3p water."""
import copy
import json
import subprocess
import sys

import numpy as np
import openmm
import pytest
from openmm import app, unit

from openmm_smoothflow.io import packaged
from openmm_smoothflow.potential import FlowPotential

openmmml = pytest.importorskip("openmmml")
KJ = unit.kilojoule_per_mole
MODEL = str(packaged("ala2-smooth.pt"))
FLOW_GROUP = 1


@pytest.fixture(scope="module")
def water(ala2):
    """(topology, positions nm, MM System) of alanine dipeptide solvated in a 2.4 nm box."""
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(ala2.topology, ala2.positions)
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(2.4, 2.4, 2.4) * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=100)  # classical minimisation, once
    positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return modeller.topology, np.array(positions), system


@pytest.fixture(scope="module")
def mixed(water):
    topology, _, system = water
    return openmmml.MLPotential("smoothflow", modelPath=MODEL).createMixedSystem(
        topology, system, list(range(22)), forceGroup=FLOW_GROUP)


@pytest.fixture(scope="module")
def mixed_context(water, mixed):
    """A Context of the mixed System at the minimised positions (shared: each TorchForce Context is
    slow on its first evaluations)."""
    topology, x, _ = water
    return context_of(mixed, x, box_of(topology))


def context_of(system, positions, box, integrator=None):
    integrator = integrator or openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    return context


def energy(context, groups=-1):
    return context.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(KJ)


def box_of(topology):
    return topology.getPeriodicBoxVectors()


def run_with_wrapping_reporters(water, mixed, steps, tmp_path):
    """``steps`` of Langevin MD of the mixed System with DCD and PDB reporters (which wrap molecules
    into the box); the flow energy at every wrapped DCD frame equals the energy at the context's
    unwrapped positions of that step."""
    topology, x, _ = water
    assert mixed.usesPeriodicBoundaryConditions()
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picoseconds)
    simulation = app.Simulation(topology, mixed, integrator, openmm.Platform.getPlatformByName("CPU"),
                                {"Threads": "1"})
    simulation.context.setPositions(x)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    interval = steps // 4
    simulation.reporters.append(app.DCDReporter(str(tmp_path / "traj.dcd"), interval))
    simulation.reporters.append(app.PDBReporter(str(tmp_path / "traj.pdb"), interval))
    unwrapped = []
    for _ in range(4):
        simulation.step(interval)
        state = simulation.context.getState(getEnergy=True, getPositions=True, groups={FLOW_GROUP})
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(KJ))
        unwrapped.append((state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                          state.getPotentialEnergy().value_in_unit(KJ)))
    del simulation.reporters[:]  # flush and close the files
    frames = app.PDBFile(str(tmp_path / "traj.pdb"))
    assert frames.getNumFrames() == 4
    context = simulation.context
    lengths = np.diag(np.array([v.value_in_unit(unit.nanometer) for v in mixed.getDefaultPeriodicBoxVectors()]))
    spread = 0.0
    for frame, (positions, flow_energy) in enumerate(unwrapped):
        wrapped = frames.getPositions(asNumpy=True, frame=frame).value_in_unit(unit.nanometer)
        assert np.isfinite(positions).all()
        spread = max(spread, float(np.abs(wrapped[:22] - positions[:22]).max()))
        context.setPositions(wrapped)
        wrapped_energy = energy(context, {FLOW_GROUP})
        # The PDB rounds to 1e-4 nm, which moves the energy by ~0.5 kJ/mol: compare with the same rounded
        # coordinates moved back by whole box vectors (the context's images), exact up to float error.
        context.setPositions(wrapped + np.round((positions - wrapped) / lengths) * lengths)
        assert wrapped_energy == pytest.approx(energy(context, {FLOW_GROUP}), rel=1e-9, abs=1e-6)
        assert wrapped_energy == pytest.approx(flow_energy, abs=5.0)  # and close to the unrounded step
    return spread


def test_default_arguments_40_steps_with_wrapping_reporters(water, mixed, tmp_path):
    run_with_wrapping_reporters(water, mixed, 40, tmp_path)


@pytest.mark.slow
def test_default_arguments_200_steps_with_wrapping_reporters(water, mixed, tmp_path):
    run_with_wrapping_reporters(water, mixed, 200, tmp_path)


@pytest.mark.slow
def test_default_arguments_1000_steps_with_wrapping_reporters(water, mixed, tmp_path):
    run_with_wrapping_reporters(water, mixed, 1000, tmp_path)


def test_flow_energy_unchanged_when_solute_atoms_move_by_box_vectors(water, mixed_context):
    topology, x, _ = water
    box = np.array([v.value_in_unit(unit.nanometer) for v in box_of(topology)])
    context = mixed_context
    context.setPositions(x)
    e0 = energy(context, {FLOW_GROUP})
    alone = FlowPotential(MODEL).createSystem(app.PDBFile(str(packaged("alanine-dipeptide.pdb"))).topology)
    e_vacuum = energy(context_of(alone, x[:22], box_of(topology)))  # the same flow, no box
    assert e0 == pytest.approx(e_vacuum, rel=1e-9)
    y = x.copy()
    y[[1, 4, 8, 14, 20]] += np.array([[1, 0, 0], [0, -1, 0], [0, 0, 1], [1, 1, 0], [-1, 0, 1]]) @ box
    context.setPositions(y)
    assert energy(context, {FLOW_GROUP}) == pytest.approx(e0, rel=1e-9)
    context.setPositions(x)


def test_interpolate_runs_and_interpolates(water, mixed_context):
    topology, x, system = water
    interpolated = openmmml.MLPotential("smoothflow", modelPath=MODEL).createMixedSystem(
        topology, system, list(range(22)), forceGroup=FLOW_GROUP, interpolate=True)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picoseconds)
    context = context_of(interpolated, x, box_of(topology), integrator)
    mixed_context.setPositions(x)
    e_mm, e_mixed = energy(context_of(system, x, box_of(topology))), energy(mixed_context)
    ends = {}
    for lam in (0.0, 0.5, 1.0):
        context.setParameter("lambda_interpolate", lam)
        ends[lam] = energy(context)
    assert ends[0.0] == pytest.approx(e_mm, rel=1e-6)
    assert ends[1.0] == pytest.approx(e_mixed, rel=1e-6)
    assert ends[0.5] == pytest.approx(0.5 * (ends[0.0] + ends[1.0]), rel=1e-6)
    integrator.step(10)
    assert np.isfinite(energy(context))
    copied = copy.deepcopy(interpolated)  # the TorchForce is a top-level force, copied without XML
    assert [type(f).__name__ for f in copied.getForces()] == [type(f).__name__ for f in interpolated.getForces()]


def test_deepcopy_of_the_mixed_system(water, mixed, mixed_context):
    topology, x, _ = water
    copied = copy.deepcopy(mixed)
    assert copied is not mixed and copied.getNumForces() == mixed.getNumForces()
    assert [f.getForceGroup() for f in copied.getForces()] == [f.getForceGroup() for f in mixed.getForces()]
    mixed_context.setPositions(x)
    e_copy, e_orig = energy(context_of(copied, x, box_of(topology))), energy(mixed_context)
    assert e_copy == pytest.approx(e_orig, rel=1e-7)  # two CPU-platform contexts: PME sums differ at ~1e-9
    torch_force = [f for f in copied.getForces() if f.getForceGroup() == FLOW_GROUP][0]
    assert torch_force.usesPeriodicBoundaryConditions()
    copy.deepcopy(torch_force)  # a single TorchForce too


def test_options_honoured_and_unknown_rejected(water, ala2):
    MLPotential = openmmml.MLPotential
    topology = ala2.topology
    x = np.array(ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    box = [openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3)]
    double = energy(context_of(MLPotential("smoothflow", modelPath=MODEL).createSystem(topology), x, box))
    single_potential = MLPotential("smoothflow", modelPath=MODEL, precision="single")
    assert json.loads(single_potential._impl.potential.module_in("single").metadata)["dtype"] == "float32"
    single = energy(context_of(single_potential.createSystem(topology), x, box))
    assert single == pytest.approx(double, rel=1e-4) and single != double
    single_potential.createSystem(topology, precision="double")  # per System: the file's dtype, as it is
    assert list(single_potential._impl.potential._rescripted) == ["float32"]
    MLPotential("smoothflow", modelPath=MODEL, implementation="torchforce").createSystem(topology)
    with pytest.raises(ValueError, match="precision must be one of"):
        MLPotential("smoothflow", modelPath=MODEL, precision="mixed")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        MLPotential("smoothflow", modelPath=MODEL, bogus=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        MLPotential("smoothflow", modelPath=MODEL).createSystem(topology, bogus=1)
    with pytest.raises(ValueError, match="backend must be"):
        MLPotential("smoothflow", modelPath=MODEL).createSystem(topology, backend="nope")
    with pytest.raises(ValueError, match="name the same option"):
        MLPotential("smoothflow", modelPath=MODEL, backend="torchforce", implementation="compiled")
    with pytest.raises(ValueError, match="needs modelPath"):
        MLPotential("smoothflow")


def test_importing_the_entry_point_module_before_openmmml():
    code = ("import openmm_smoothflow.potential.mlpotential as m, sys; assert 'torch' not in sys.modules; "
            "from openmmml import MLPotential; "
            "assert isinstance(MLPotential._implFactories['smoothflow'], m.SmoothFlowPotentialImplFactory); "
            f"MLPotential('smoothflow', modelPath={MODEL!r}); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
