"""A second MD backend: ``openmm.PythonForce`` around a ``torch.compile``-d energy and force.

At batch 1 a TorchScript energy+force is dominated by per-operator overhead (thousands of tiny
ATen calls); inductor fuses the element-wise mixture math into a few C++ kernels. The compiled
function is built once per generator and process (inductor's on-disk cache makes later processes
start faster). Energies and forces are those of the same weights as the TorchScript export, in
float64, converted to kJ/mol and kJ/mol/nm with the model's kT.
"""
from typing import Callable, Iterable, Optional, Tuple

import numpy as np
import torch

_CACHE: dict = {}


def energy_force_function(generator) -> Callable[[np.ndarray], Tuple[float, np.ndarray]]:
    """positions (N, 3) nm (numpy) -> (u in kT, -grad u in kT/nm as (N, 3) numpy); compiled, cached."""
    key = id(generator)
    if key not in _CACHE:
        compiled = torch.compile(generator, dynamic=False)

        def energy_force(positions: np.ndarray) -> Tuple[float, np.ndarray]:
            x = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float64))[None].requires_grad_(True)
            u = compiled(x)
            (grad,) = torch.autograd.grad(u.sum(), x)
            return float(u.detach()[0]), -grad[0].numpy()

        _CACHE[key] = (generator, energy_force)  # keep the generator alive with its compiled code
    return _CACHE[key][1]


def compiled_python_force(generator, temperature: float, atoms: Optional[Iterable[int]] = None):
    """An ``openmm.PythonForce`` evaluating ``generator`` (float64) at ``temperature`` K."""
    import openmm
    from openmm import unit

    from .training.data import kT

    kt = kT(temperature)
    energy_force = energy_force_function(generator.double().eval())

    def compute(state):
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.isfinite(positions).all():
            raise ValueError("smoothflow: positions contain NaN or inf")
        u, f = energy_force(positions)
        return u * kt, f * kt

    force = openmm.PythonForce(compute)
    if atoms is not None:
        force.setParticles(list(atoms))
    return force
