"""A flow on the solute, classical explicit water around it: openmm-ml's ``createMixedSystem``.

    python examples/mixed_system.py                      # the shipped model, 200 steps
    python examples/mixed_system.py my_model.pt --steps 1000 --out-dir mixed

Alanine dipeptide in a 2.4 nm box of amber14/tip3p water with PME. openmm-ml's mechanical embedding
computes the solute's internal energy with the flow (its classical bonds, angles, torsions and
intramolecular nonbonded terms are removed) and everything else, the solute-water interactions
included, with amber14. The flow's TorchForce is periodic: it makes the solute whole by minimum image
along its bonds, so the DCD reporter's wrapping of coordinates into the box changes nothing.

Physics (read this before using the numbers): the shipped model was trained on implicit-solvent
(amber99sbildn + OBC) data, so its energy is a potential of mean force of the solute *that already
contains solvation*. Next to explicit water, the solute-water interactions are then counted twice
(once averaged inside the flow, once explicitly), which biases the conformations. This example shows
the mechanics; for explicit water train the flow on gas-phase data (``smoothflow simulate
--forcefield amber99sbildn.xml``, no OBC), whose energy is the solute's internal energy alone. A flow
trained on solute frames of explicit-solvent MD is again a potential of mean force: use it alone
(``createSystem``, no water), not in a mixed System.

The script checks: the flow energy does not change when solute atoms move by box vectors; the
``interpolate=True`` System gives the classical energy at ``lambda_interpolate=0`` and the mixed one
at 1; ``copy.deepcopy`` of the System works; then it runs Langevin MD with a DCD reporter.
"""
import argparse
import copy
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from openmm import app, unit
from openmmml import MLPotential

from openmm_smoothflow.io import packaged

FLOW_GROUP = 1
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("model", nargs="?", default=str(packaged("ala2-smooth.pt")), help="exported flow")
parser.add_argument("--steps", type=int, default=200, help="Langevin steps of 1 fs (default 200)")
parser.add_argument("--box", type=float, default=2.4, help="cubic water box edge, nm (default 2.4)")
parser.add_argument("--platform", default="CPU")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--out-dir", default=None, help="write traj.dcd here (default: no trajectory)")
args = parser.parse_args()
torch.set_num_threads(args.threads)
properties = {"Threads": str(args.threads)} if args.platform == "CPU" else {}
platform = openmm.Platform.getPlatformByName(args.platform)
KJ = unit.kilojoule_per_mole

# The classical System of the solvated solute.
pdb = app.PDBFile(str(packaged("alanine-dipeptide.pdb")))
forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
modeller = app.Modeller(pdb.topology, pdb.positions)
modeller.addSolvent(forcefield, boxSize=openmm.Vec3(args.box, args.box, args.box) * unit.nanometer)
mm_system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                    nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds)
solute = [atom.index for atom in next(modeller.topology.chains()).atoms()]
print(f"{modeller.topology.getNumAtoms()} atoms, {len(solute)} of them the solute; box {args.box} nm, PME")


def context_of(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)
    context.setPeriodicBoxVectors(*modeller.topology.getPeriodicBoxVectors())
    context.setPositions(positions)
    return context


def energy(context, groups=-1):
    return context.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(KJ)


# Minimise classically (the PDB solute and fresh water clash a little), then build the mixed System.
minimizer = context_of(mm_system, modeller.positions)
openmm.LocalEnergyMinimizer.minimize(minimizer, maxIterations=200)
x = minimizer.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
potential = MLPotential("smoothflow", modelPath=args.model)  # precision=, backend= are accepted here
mixed = potential.createMixedSystem(modeller.topology, mm_system, solute, forceGroup=FLOW_GROUP)
print("mixed System forces:", [f.getName() for f in mixed.getForces()])

# The flow energy of the same physical state, with solute atoms moved by whole box vectors.
context = context_of(mixed, x)
e_flow = energy(context, {FLOW_GROUP})
box = np.array([v.value_in_unit(unit.nanometer) for v in modeller.topology.getPeriodicBoxVectors()])
moved = x.copy()
moved[[1, 4, 8, 14, 20]] += np.array([[1, 0, 0], [0, -1, 0], [0, 0, 1], [1, 1, 0], [-1, 0, 1]]) @ box
context.setPositions(moved)
e_moved = energy(context, {FLOW_GROUP})
print(f"flow energy {e_flow:.6f} kJ/mol; 5 solute atoms moved by box vectors {e_moved:.6f} kJ/mol "
      f"(relative difference {abs(e_moved - e_flow) / abs(e_flow):.1e})")

# Interpolation between the classical and the mixed System, and a deep copy of the mixed System.
interpolated = potential.createMixedSystem(modeller.topology, mm_system, solute, interpolate=True)
ends = context_of(interpolated, x)
e_mm, e_mixed = energy(context_of(mm_system, x)), energy(context_of(mixed, x))
for lam, expected in ((0.0, e_mm), (1.0, e_mixed)):
    ends.setParameter("lambda_interpolate", lam)
    print(f"interpolate: lambda_interpolate={lam:.0f}: {energy(ends):.3f} kJ/mol "
          f"({'classical' if lam == 0 else 'mixed'} System: {expected:.3f})")
copied = copy.deepcopy(mixed)
print(f"deepcopy: {copied.getNumForces()} forces, energy {energy(context_of(copied, x)):.3f} kJ/mol "
      f"(original {e_mixed:.3f})")

# Langevin MD of the mixed System; DCD frames are wrapped into the box by the reporter.
integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
simulation = app.Simulation(modeller.topology, mixed, integrator, platform, properties)
simulation.context.setPositions(x)
simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
if args.out_dir:
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    simulation.reporters.append(app.DCDReporter(str(Path(args.out_dir) / "traj.dcd"), max(args.steps // 10, 1)))
start = time.perf_counter()
simulation.step(args.steps)
seconds = time.perf_counter() - start
state = simulation.context.getState(getEnergy=True, getPositions=True)
finite = bool(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all())
print(f"{args.steps} steps in {seconds:.1f} s ({1000 * seconds / args.steps:.1f} ms/step): potential energy "
      f"{state.getPotentialEnergy().value_in_unit(KJ):.1f} kJ/mol, flow {energy(simulation.context, {FLOW_GROUP}):.1f} "
      f"kJ/mol, positions finite: {finite}")
