"""A second MD backend: ``openmm.PythonForce`` around a ``torch.compile``-d energy and force.

At batch 1 a TorchScript energy+force is dominated by per-operator overhead (thousands of tiny
ATen calls); inductor fuses the element-wise mixture math into a few C++ kernels.
:class:`CompiledEnergy` owns a float64 copy of a generator and its compiled function: build it once
(``FlowPotential`` builds one per potential, on the first ``backend="compiled"`` force) and share it
between forces; it holds nothing global, so it is freed with its owner and the forces that use it
(inductor's on-disk cache makes later compilations of the same model faster). Energies and forces are
those of the same weights as the TorchScript export, in float64, converted to kJ/mol and kJ/mol/nm with
the model's kT.
"""
import copy
from typing import Iterable, Optional, Tuple

import numpy as np
import torch


class CompiledEnergy:
    """positions (N, 3) nm (numpy) -> (u in kT, -grad u in kT/nm as (N, 3) numpy), by ``torch.compile``.

    Holds a float64, eval-mode copy of ``generator`` without parameter gradients (the caller's module is
    left as it is); compilation happens on the first call."""

    def __init__(self, generator: torch.nn.Module):
        self.generator = copy.deepcopy(generator).to(torch.float64).eval().requires_grad_(False)
        self._compiled = torch.compile(self.generator, dynamic=False)

    def __call__(self, positions: np.ndarray) -> Tuple[float, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float64))[None].requires_grad_(True)
        u = self._compiled(x)
        (grad,) = torch.autograd.grad(u.sum(), x)
        return float(u.detach()[0]), -grad[0].numpy()


def compiled_python_force(energy: CompiledEnergy, temperature: float, atoms: Optional[Iterable[int]] = None):
    """An ``openmm.PythonForce`` evaluating ``energy`` (a :class:`CompiledEnergy`) at ``temperature`` K,
    on ``atoms`` of a larger system if given."""
    import openmm
    from openmm import unit

    from ..units import kT

    kt = kT(temperature)

    def compute(state):
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.isfinite(positions).all():
            raise ValueError("smoothflow: positions contain NaN or inf")
        u, f = energy(positions)
        return u * kt, f * kt

    force = openmm.PythonForce(compute)
    if atoms is not None:
        force.setParticles(list(atoms))
    return force
