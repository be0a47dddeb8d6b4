"""``smoothflow train --compile``: the training losses through ``torch.compile``.

Force matching needs the gradient of the flow force w.r.t. the parameters: with autograd that is a
double backward, which ``torch.compile`` (aot_autograd) refuses. :class:`CompiledFlow` instead compiles
the generator's hand-written reverse pass (``_energy_and_gradient``: energy and position gradient from
the same forward, written out layer by layer): autograd then differentiates that pass once, a single
backward that aot_autograd compiles. The losses are those of eager training to rounding (tests compare
losses and parameter gradients).

:class:`CompiledFlow` stands in for the generator in :func:`~.losses.combined_loss`: calling it gives
u (B,) in kT (compiled density direction, NLL), ``energy_and_gradient(x)`` gives (u (B,), grad_x u
(B, N, 3) kT/nm) (force matching), and ``module`` is the eager generator (sampling for the reverse KL
runs eagerly through root finding, as ``DistributedDataParallel.module``). Flows without the
hand-written pass (spline, affine) compile the NLL only and keep autograd for force matching.

Cost: the first steps compile (tens of seconds for the NLL, a few minutes for NLL + force matching of
the paper-size model on a busy CPU; inductor caches on disk, so later runs start faster); shapes are
static, so a batch of another size (the last, smaller one; validation) compiles once more or runs
eagerly (validation does).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn


def has_hand_written_pass(generator: nn.Module) -> bool:
    """Whether ``generator`` has the analytic reverse pass (density orientation, transforms with
    ``has_jacobian``: the smooth flow)."""
    layers = getattr(generator, "layers", [])
    return (not getattr(generator, "inverted", True) and len(layers) > 0
            and all(getattr(layer.transform, "has_jacobian", False) for layer in layers))


class CompiledFlow:
    """A generator's training energies through ``torch.compile`` (see the module docstring);
    ``backend``: torch.compile's (``"eager"`` traces without generating code: the same graph, for tests)."""

    def __init__(self, generator: nn.Module, backend: str = "inductor"):
        self.module = generator
        self.hand_written = has_hand_written_pass(generator)
        self._energy = torch.compile(generator, dynamic=False, backend=backend)
        self._pass = (torch.compile(generator._energy_and_gradient, dynamic=False, backend=backend)
                      if self.hand_written else None)

    def __call__(self, x: Tensor) -> Tensor:
        """u(x) (B,) in kT for positions (B, N, 3) nm, differentiable w.r.t. the parameters."""
        return self._energy(x)

    def energy_and_gradient(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(u (B,) kT, grad_x u (B, N, 3) kT/nm), both differentiable w.r.t. the parameters (once)."""
        if self._pass is not None:
            return self._pass(x.detach())
        x = x.detach().requires_grad_(True)  # no hand-written pass: eager autograd, double backward
        energy = self.module(x)
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
        return energy, grad

    def parameters(self):
        return self.module.parameters()


def compiled_flow(generator: nn.Module, world: int = 1, log=print) -> CompiledFlow:
    """The :class:`CompiledFlow` the trainer uses for ``--compile``: one process only (under torchrun the
    gradients are synchronised by DistributedDataParallel's own forward, which the compiled pass does
    not go through); says what is compiled and that the first steps take the compile time."""
    if world > 1:
        raise ValueError("--compile is for one process; under torchrun train without it")
    flow = CompiledFlow(generator)
    log("compiling the losses (torch.compile" + (", force matching through the hand-written gradient pass"
                                                 if flow.hand_written else "; force matching by autograd, eager")
        + "): the first steps take minutes")
    return flow
