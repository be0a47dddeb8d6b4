"""An exported smooth flow through openmm-ml: ``MLPotential('smoothflow', modelPath=...)``.

    python examples/openmm_ml.py                  # the shipped alanine-dipeptide model
    python examples/openmm_ml.py my_model.pt      # a file written by `smoothflow export`

Installing openmm_smoothflow registers the name ``smoothflow`` with openmm-ml (entry point
``openmmml.potentials``), so ``createSystem`` works as for any other ML potential. The flow models the
whole molecule it was trained on (every intramolecular interaction, in vacuum/implicit solvent as in its
training data), so ``createSystem`` is all you need here: no ``createMixedSystem``. The script checks
that the System's energies equal those of ``FlowPotential(...).createSystem`` (the package's own path)
and runs a short Langevin simulation.
"""
import sys

import numpy as np
import openmm
import torch
from openmm import app, unit
from openmmml import MLPotential

from openmm_smoothflow.io import packaged
from openmm_smoothflow.potential import FlowPotential

torch.set_num_threads(1)
model_path = sys.argv[1] if len(sys.argv) > 1 else str(packaged("ala2-smooth.pt"))
pdb = app.PDBFile(str(packaged("alanine-dipeptide.pdb")))

# The System: element masses, the flow as a TorchForce, a CMMotionRemover (openmm-ml adds it).
# A topology whose atoms do not match the model's (count or elements, in order) raises ValueError here.
potential = MLPotential("smoothflow", modelPath=model_path)
system = potential.createSystem(pdb.topology)
print("openmm-ml System forces:", [f.getName() for f in system.getForces()])

# The same model through the package's FlowPotential: the energies must be identical.
reference = FlowPotential(model_path).createSystem(pdb.topology)
platform = openmm.Platform.getPlatformByName("Reference")
contexts = [openmm.Context(s, openmm.VerletIntegrator(0.001), platform) for s in (system, reference)]
with np.load(packaged("ala2-frames.npz")) as npz:
    frames = [pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)] + list(npz["positions"][:4])
for i, positions in enumerate(frames):
    energies = []
    for context in contexts:
        context.setPositions(np.asarray(positions, dtype=np.float64))
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    print(f"frame {i}: openmm-ml {energies[0]:12.6f} kJ/mol, FlowPotential {energies[1]:12.6f} kJ/mol, "
          f"difference {energies[0] - energies[1]:.1e}")
    assert energies[0] == energies[1], "openmm-ml and FlowPotential disagree"

# A short Langevin run with the openmm-ml System at the model's temperature.
temperature = FlowPotential(model_path).temperature * unit.kelvin
integrator = openmm.LangevinMiddleIntegrator(temperature, 1 / unit.picosecond, 1 * unit.femtosecond)
simulation = app.Simulation(pdb.topology, system, integrator, platform)
simulation.context.setPositions(pdb.positions)
simulation.context.setVelocitiesToTemperature(temperature, 1)
simulation.reporters.append(app.StateDataReporter(sys.stdout, 100, step=True, potentialEnergy=True,
                                                  kineticEnergy=True, temperature=True))
simulation.step(500)
