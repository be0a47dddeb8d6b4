"""The OpenMM plugin: export, FlowPotential, TorchForce in real Contexts, openmm-ml, bad input."""
import json

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from helpers import randomize
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.potential import FlowPotential, deserializeSystem, export, read_metadata
from openmm_smoothflow.units import kT as kT_kjmol

KJ = unit.kilojoule_per_mole
KJ_NM = unit.kilojoule_per_mole / unit.nanometer


@pytest.fixture(scope="module")
def generator(ala2):
    torch.manual_seed(0)
    gen = BoltzmannGenerator.from_topology(ala2.topology, hidden=[32, 32], n_torsion_layers=2, n_ic_layers=2)
    return randomize(gen.double(), 0.1)


@pytest.fixture(scope="module")
def model_path(generator, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "flow.pt"
    export(generator, path, provenance={"test": True})
    return path


def context_for(system, positions, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    return context


def energy_forces(context):
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ_NM))


def test_metadata_readable_without_training_code(model_path, generator):
    module = torch.jit.load(str(model_path))
    meta = json.loads(module.metadata)
    assert meta["atom_count"] == 22 and meta["elements"][:3] == ["H", "C", "H"]
    assert meta["temperature"] == 300.0 and meta["kind"] == "smooth" and meta["provenance"] == {"test": True}
    assert meta["bond_range"] == [0.05, 0.3]
    assert read_metadata(model_path) == meta


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exported_energy_equals_generator(model_path, generator, ala2_positions, dtype):
    module = torch.jit.load(str(model_path))
    x = ala2_positions + 0.003 * torch.randn(22, 3, dtype=torch.float64)
    expected = float(generator.energy(x[None])[0].detach()) * kT_kjmol(300.0)
    got = module(x.to(dtype))
    assert got.dtype == dtype
    rtol = 1e-6 if dtype == torch.float64 else 1e-5
    assert float(got) == pytest.approx(expected, rel=rtol, abs=1e-6)


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_torchforce_matches_python_model_and_finite_differences(model_path, generator, ala2, ala2_positions, platform):
    potential = FlowPotential(model_path)
    system = potential.createSystem(ala2.topology)
    assert system.getNumParticles() == 22
    assert any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    x = (ala2_positions + 0.003 * torch.randn(22, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).numpy()
    context = context_for(system, x, platform)
    energy, forces = energy_forces(context)
    kt = kT_kjmol(300.0)
    assert energy == pytest.approx(float(generator.energy(torch.tensor(x)[None])[0].detach()) * kt, rel=1e-6)
    expected_forces = generator.force(torch.tensor(x)[None])[0].numpy() * kt
    np.testing.assert_allclose(forces, expected_forces, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-6 * np.abs(forces).max())
    # OpenMM-style finite-difference check: a step along the force direction
    step = 1e-4
    direction = forces / np.linalg.norm(forces)
    context.setPositions(x + step * direction)
    e_plus, _ = energy_forces(context)
    context.setPositions(x - step * direction)
    e_minus, _ = energy_forces(context)
    assert (e_minus - e_plus) / (2 * step) == pytest.approx(np.linalg.norm(forces), rel=1e-3)


def test_rigid_motion_invariance_in_context(model_path, ala2, ala2_positions):
    system = FlowPotential(model_path).createSystem(ala2.topology)
    x = ala2_positions.numpy()
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    e0, f0 = energy_forces(context_for(system, x))
    e1, f1 = energy_forces(context_for(system, x @ q.T + np.array([1.0, -2.0, 0.5])))
    assert e1 == pytest.approx(e0, abs=1e-6)
    np.testing.assert_allclose(f1, f0 @ q.T, atol=1e-5)


def test_xml_serializer_round_trip(model_path, ala2, ala2_positions):
    """XmlSerializer.serialize, then deserializeSystem (the pinned plugin's own TorchForce
    deserialiser crashes the process, see potential.deserializeSystem)."""
    from openmm_smoothflow.md.systems import classical_system

    system = FlowPotential(model_path).createSystem(ala2.topology)
    classical = classical_system(ala2.topology)
    for i in range(classical.getNumForces()):  # a mixed System: every force kind must survive
        force = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(classical.getForce(i)))
        force.setForceGroup(2)
        system.addForce(force)
    copy = deserializeSystem(openmm.XmlSerializer.serialize(system))
    assert [type(f).__name__ for f in copy.getForces()][1:] == [type(f).__name__ for f in system.getForces()][1:]
    assert copy.getForce(0).getForceGroup() == 0 and copy.getForce(2).getForceGroup() == 2
    x = ala2_positions.numpy()
    e_copy, f_copy = energy_forces(context_for(copy, x))
    e_orig, f_orig = energy_forces(context_for(system, x))
    assert e_copy == pytest.approx(e_orig, rel=1e-12)
    np.testing.assert_allclose(f_copy, f_orig, rtol=1e-12, atol=1e-9)


def test_openmm_ml_entry_point(model_path, ala2, ala2_positions):
    from openmmml import MLPotential

    system = MLPotential("smoothflow", modelPath=str(model_path)).createSystem(ala2.topology)
    reference = FlowPotential(model_path).createSystem(ala2.topology)
    x = ala2_positions.numpy()
    assert energy_forces(context_for(system, x))[0] == pytest.approx(energy_forces(context_for(reference, x))[0])


def test_bad_topologies_are_named(model_path, ala2):
    potential = FlowPotential(model_path)
    short = app.Topology()
    residue = short.addResidue("X", short.addChain())
    for _ in range(21):
        short.addAtom("C", app.element.carbon, residue)
    with pytest.raises(ValueError, match="22 atoms.*21"):
        potential.createSystem(short)
    swapped = app.Topology()
    residue = swapped.addResidue("X", swapped.addChain())
    for i, atom in enumerate(ala2.topology.atoms()):
        swapped.addAtom(atom.name, app.element.oxygen if i == 4 else atom.element, residue)
    with pytest.raises(ValueError, match="atom 4 .*O.*expects C"):
        potential.createSystem(swapped)


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        FlowPotential(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip archive at all")
    with pytest.raises(ValueError, match="not a readable TorchScript"):
        FlowPotential(bad)
    other = tmp_path / "other.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(other))
    with pytest.raises(ValueError, match="not a smoothflow export"):
        FlowPotential(other)


def test_nan_positions_raise_a_clear_error(model_path, ala2, ala2_positions):
    system = FlowPotential(model_path).createSystem(ala2.topology)
    x = ala2_positions.numpy().copy()
    x[3, 1] = np.nan
    context = context_for(system, x)
    with pytest.raises(Exception, match="NaN"):
        context.getState(getEnergy=True)


def test_outside_support_geometry_is_finite_in_context(model_path, ala2, ala2_positions):
    system = FlowPotential(model_path).createSystem(ala2.topology)
    x = ala2_positions.numpy().copy()
    x[0] = x[1] + 4.0 * (x[0] - x[1])  # a C-H bond stretched to ~0.44 nm
    energy, forces = energy_forces(context_for(system, x))
    assert np.isfinite(energy) and np.isfinite(forces).all()


def test_langevin_md_stays_finite(model_path, ala2, ala2_positions):
    """A random flow from the PDB structure; the shipped model runs 2,000 steps in test_shipped (slow)."""
    system = FlowPotential(model_path).createSystem(ala2.topology)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ala2_positions.numpy())
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(500)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(KJ))
    assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()
