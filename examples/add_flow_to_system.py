"""Add an exported smooth flow to an OpenMM System with plain OpenMM + openmm-torch, and run MD.

    python examples/add_flow_to_system.py                 # the shipped alanine-dipeptide model
    python examples/add_flow_to_system.py my_model.pt     # a file written by `smoothflow export`

No openmm_smoothflow code is needed at run time except to find the shipped files: the model is one
TorchScript file, positions (N, 3) nm -> energy kJ/mol, with its metadata as a JSON string attribute.
"""
import json
import sys
from pathlib import Path

import openmm
import openmmtorch
import torch
from openmm import app, unit

from openmm_smoothflow.io import packaged

torch.set_num_threads(1)  # one molecule per step: extra threads only add overhead
model_path = sys.argv[1] if len(sys.argv) > 1 else str(packaged("ala2-smooth.pt"))
if not Path(model_path).is_file():
    sys.exit(f"model file not found: {model_path} (give the path of a file written by `smoothflow export`)")
pdb = app.PDBFile(str(packaged("alanine-dipeptide.pdb")))

# 1. The metadata says which atoms (in which order) and which temperature the flow was trained for.
meta = json.loads(torch.jit.load(model_path).metadata)
elements = [atom.element.symbol for atom in pdb.topology.atoms()]
if elements != meta["elements"]:
    sys.exit(f"{model_path} expects atoms {meta['elements']}, the PDB has {elements}")
print(f"{model_path}: {meta['kind']} flow, {meta['atom_count']} atoms, trained at {meta['temperature']} K")

# 2. A System: one particle per atom with its element mass, the flow as a TorchForce, and a
#    CMMotionRemover (the flow energy is invariant under rigid motions, so nothing else holds the centre).
system = openmm.System()
for atom in pdb.topology.atoms():
    system.addParticle(atom.element.mass)
system.addForce(openmmtorch.TorchForce(model_path))
system.addForce(openmm.CMMotionRemover())

# 3. Langevin dynamics at the model's temperature, 1 fs steps; print energies as it goes.
temperature = meta["temperature"] * unit.kelvin
integrator = openmm.LangevinMiddleIntegrator(temperature, 1 / unit.picosecond, 1 * unit.femtosecond)
simulation = app.Simulation(pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
simulation.context.setPositions(pdb.positions)
simulation.context.setVelocitiesToTemperature(temperature, 1)
for block in range(5):
    simulation.step(100)
    state = simulation.context.getState(getEnergy=True)
    epot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    ekin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    print(f"step {100 * (block + 1):4d}: potential {epot:9.2f} kJ/mol, kinetic {ekin:7.2f} kJ/mol")
