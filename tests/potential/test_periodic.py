"""Periodic boxes: the flow's energy and forces are the same for every periodic image of every atom."""
import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from helpers import randomize
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.io import packaged
from openmm_smoothflow.potential import FlowPotential, export
from openmm_smoothflow.potential.periodic import MakeWhole, takes_box

KJ = unit.kilojoule_per_mole
KJ_NM = unit.kilojoule_per_mole / unit.nanometer
# a triclinic box in OpenMM's reduced form (nm): a along x, b in the xy plane
BOX = np.array([[2.5, 0.0, 0.0], [0.7, 2.4, 0.0], [-0.9, 0.8, 2.3]])


@pytest.fixture(scope="module")
def new_export(ala2, tmp_path_factory):
    torch.manual_seed(0)
    gen = BoltzmannGenerator.from_topology(ala2.topology, hidden=[16, 16], n_torsion_layers=2, n_ic_layers=2)
    path = tmp_path_factory.mktemp("periodic") / "flow.pt"
    export(randomize(gen.double(), 0.1), path)
    return path


def shifted(x, rng, atoms):
    """x with each of ``atoms`` moved by a random integer combination of the box vectors."""
    y = x.copy()
    for i in atoms:
        y[i] += rng.integers(-2, 3, size=3) @ BOX
    return y


def test_make_whole_undoes_lattice_shifts_triclinic(ala2, ala2_positions):
    from openmm_smoothflow.flows.ic import zmatrix_from_topology

    make_whole = MakeWhole.from_zmatrix(zmatrix_from_topology(ala2.topology))
    x = ala2_positions.numpy()
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = shifted(x, rng, range(22))
        whole = make_whole(torch.tensor(y), torch.tensor(BOX)).numpy()
        offset = whole - x  # one lattice vector for the whole molecule (the root atom's image)
        np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-12)
        frac = np.linalg.solve(BOX.T, offset[0])
        np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)


def periodic_context(system, x):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPeriodicBoxVectors(*BOX)
    context.setPositions(x)
    return context


def energy_forces(context):
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ_NM)


@pytest.mark.parametrize("which, subset", [("new export", False), ("shipped (positions-only) export", True)])
def test_energy_and_forces_invariant_under_box_shifts(which, subset, new_export, ala2, ala2_positions):
    path = new_export if which == "new export" else packaged("ala2-spline.pt")  # shipped before boxes existed
    potential = FlowPotential(path)
    assert takes_box(potential.module) == (which == "new export")
    x = ala2_positions.numpy()
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*BOX)
    offset = 7 if subset else 0  # the solute inside a larger system: atoms 7..28 of 35
    for _ in range(offset + 22 + (6 if subset else 0)):
        system.addParticle(12.0)
    atoms = list(range(offset, offset + 22)) if subset else None
    system.addForce(potential.createForce(ala2.topology if not subset else None, atoms, periodic=True))
    assert system.usesPeriodicBoundaryConditions()
    full = np.zeros((system.getNumParticles(), 3))
    full[offset:offset + 22] = x
    context = periodic_context(system, full)
    e0, f0 = energy_forces(context)
    rng = np.random.default_rng(1)
    for moved in ([3], [0], list(range(22))):  # a single atom, the root, every atom
        y = full.copy()
        y[offset:offset + 22] = shifted(x, rng, moved)
        context.setPositions(y)
        e1, f1 = energy_forces(context)
        assert e1 == pytest.approx(e0, rel=1e-10)
        np.testing.assert_allclose(f1, f0, rtol=1e-9, atol=1e-8 * np.abs(f0).max())
    # the same energy as the non-periodic force on the whole molecule
    reference = potential.createForce(None, atoms)
    assert not reference.usesPeriodicBoundaryConditions()
    plain = openmm.System()
    for _ in range(system.getNumParticles()):
        plain.addParticle(12.0)
    plain.addForce(reference)
    e_plain, f_plain = energy_forces(periodic_context(plain, full))
    assert e_plain == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(f_plain, f0, rtol=1e-9, atol=1e-8 * np.abs(f0).max())


def test_topology_box_makes_the_flow_periodic(new_export, ala2):
    topology = ala2.topology
    box = topology.getPeriodicBoxVectors()
    try:
        topology.setPeriodicBoxVectors(BOX * unit.nanometer)
        system = FlowPotential(new_export).createSystem(topology)
        assert system.usesPeriodicBoundaryConditions()
        np.testing.assert_allclose(np.array([v.value_in_unit(unit.nanometer) for v in
                                             system.getDefaultPeriodicBoxVectors()]), BOX)
        with pytest.warns(UserWarning, match="not periodic"):  # compiled on first use only: cheap here
            compiled = FlowPotential(new_export).createSystem(topology, backend="compiled")
        assert not compiled.usesPeriodicBoundaryConditions()
    finally:
        topology.setPeriodicBoxVectors(box)
    assert not FlowPotential(new_export).createSystem(topology).usesPeriodicBoundaryConditions()


def test_periodic_needs_the_torchforce_backend(new_export):
    with pytest.raises(ValueError, match="periodic.*torchforce"):
        FlowPotential(new_export).createForce(periodic=True, backend="compiled")
