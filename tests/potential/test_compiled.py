"""The compiled backend (``torch.compile`` + ``openmm.PythonForce``) against the TorchScript export run by
the TorchForce, in real OpenMM contexts; built once per FlowPotential, freed with it, the caller's module
left untouched.

The model is the smallest smooth flow that still has coupling layers over bonds, angles and torsions (two
layers, a 5-atom chain): a cold ``torch.compile`` of it takes about a minute on two busy cores (seconds
with inductor's on-disk cache warm), the paper-size model several minutes (``bench speed`` checks it)."""
import gc
import weakref

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from helpers import chain_topology, randomize
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.potential import FlowPotential, export
from openmm_smoothflow.potential.compiled import CompiledEnergy

TINY = dict(hidden=[8], n_torsion_layers=0, n_ic_layers=0)


def tiny_generator():
    return randomize(BoltzmannGenerator.from_topology(chain_topology(5), **TINY).double(), 0.3, seed=2)


def configurations(generator) -> np.ndarray:
    """(4, 5, 3) nm: a chain inside the support, one with a bond past 0.3 nm, one with a squeezed angle."""
    g = torch.Generator().manual_seed(3)
    x, _ = generator.sample(2, generator=g)
    x = x.detach()
    stretched = x[0].clone()
    stretched[1] = stretched[0] + 3.0 * (stretched[1] - stretched[0])
    squeezed = x[1].clone()
    squeezed[4] = squeezed[3] + 0.3 * (squeezed[2] - squeezed[3])
    return torch.stack([x[0], x[1], stretched, squeezed]).numpy()


def energies_forces(system, frames):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    out = []
    for x in frames:
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        out.append((state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                    state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
    return np.array([e for e, _ in out]), np.array([f for _, f in out])


def test_compiled_backend_equals_torchforce_built_once_and_freed(tmp_path):
    generator = tiny_generator()
    path = tmp_path / "tiny.pt"
    export(generator, path)
    topology = chain_topology(5)
    frames = configurations(generator)
    potential = FlowPotential(path)
    e_tf, f_tf = energies_forces(potential.createSystem(topology), frames)
    e_c, f_c = energies_forces(potential.createSystem(topology, backend="compiled"), frames)
    assert np.abs(e_tf[2:] - e_tf[:2].max()).min() > 100.0  # the wall is in play for the last two
    np.testing.assert_allclose(e_c, e_tf, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(f_c, f_tf, rtol=1e-8, atol=1e-8 * np.abs(f_tf).max())
    # one compiled function per potential, shared by its forces; freed with the potential and its forces
    compiled = potential._compiled
    force = potential.createForce(topology, backend="compiled")
    assert potential._compiled is compiled
    alive = weakref.ref(compiled.generator)
    del potential, compiled, force
    gc.collect()
    assert alive() is None


def test_compiled_energy_leaves_the_callers_module_alone():
    generator = tiny_generator().float()
    energy = CompiledEnergy(generator)  # compiles on first call only
    assert all(p.dtype == torch.float32 and p.requires_grad for p in generator.parameters())
    assert energy.generator is not generator
    assert all(p.dtype == torch.float64 and not p.requires_grad for p in energy.generator.parameters())
