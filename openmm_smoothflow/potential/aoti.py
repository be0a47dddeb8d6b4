"""The fastest CPU MD backend: the export's hand-written energy+force pass, ahead-of-time compiled.

``torch.export`` traces the generator's ``_energy_and_gradient`` (the analytic reverse pass the
TorchScript export runs, no autograd graph) at batch 1 in float64; ``torch._inductor``'s AOTInductor
compiles that graph into one shared library packaged as a ``.pt2`` file, which
``torch._inductor.aoti_load_package`` loads in a fraction of a second and calls with almost no
per-operator overhead. openmm-torch's TorchForce cannot load such a package, so the force is an
``openmm.PythonForce`` (:func:`aoti_python_force`).

The build takes minutes (inductor generates and compiles C++), so it happens once per model file and
torch version: the package is cached in ``$SMOOTHFLOW_CACHE`` (default ``~/.cache/openmm_smoothflow``)
under ``aoti/<key>.pt2``, ``key`` a hash of the model's weights and metadata, of the compiled code's
source, of the torch version and this module's :data:`VERSION` (:func:`cache_key`). :func:`aoti_package` prints what it does while it builds; where it cannot
build (no C++ compiler, an export the tracer cannot handle) it raises :class:`AOTIUnavailable`, and
``FlowPotential.createForce(backend="aoti")`` then warns and falls back to the TorchForce.

Units: positions nm in, energy kJ/mol and forces kJ/mol/nm out (the model's kT applied inside the
compiled graph), float64 at the boundary. The flow computes in float64 (default) or float32
(``precision="single"``: half the weights' memory traffic, the batch-1 call about 2x faster; the
energy then carries float32 rounding, ~1e-4 kJ/mol on alanine dipeptide); one package per dtype.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..units import PathLike

VERSION = "1"  # bump when what is compiled changes: old cache entries are then ignored
CACHE_ENV = "SMOOTHFLOW_CACHE"


class AOTIUnavailable(RuntimeError):
    """The AOTInductor package could not be built or loaded (the reason is the message)."""


class EnergyForce(nn.Module):
    """positions (N, 3) nm, float64 -> (energy (1,) kJ/mol, forces (N, 3) kJ/mol/nm), float64, by the
    generator's hand-written reverse pass (``_energy_and_gradient``) in the generator's dtype; what
    AOTInductor compiles."""

    def __init__(self, generator: nn.Module, kT: float):
        super().__init__()
        self.generator = generator
        self.kT = float(kT)
        self.dtype = next(generator.parameters()).dtype

    def forward(self, positions: Tensor) -> Tuple[Tensor, Tensor]:
        energy, grad = self.generator._energy_and_gradient(positions.to(self.dtype).unsqueeze(0))
        return (energy * self.kT).to(torch.float64), (grad[0] * (-self.kT)).to(torch.float64)


def cache_dir() -> Path:
    """Where packages are cached: ``$SMOOTHFLOW_CACHE`` or ``~/.cache/openmm_smoothflow``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "openmm_smoothflow")


def cache_key(module: torch.jit.ScriptModule, dtype: torch.dtype = torch.float64) -> str:
    """Hash (hex, 24 characters) of what the package is built from: the exported model's contents (its
    metadata and every tensor of its state dict; not the file's bytes, which differ between exports of
    the same weights), the dtype it computes in, the source of the code that is compiled (``flows/``,
    ``transforms/``), the torch version and :data:`VERSION`."""
    digest = hashlib.sha256(module.metadata.encode())
    if dtype != torch.float64:  # float64 packages keep the keys they had before float32 ones existed
        digest.update(f"|compute {dtype}|".encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    package = Path(__file__).resolve().parent.parent
    for source in sorted([*package.glob("flows/*.py"), *package.glob("transforms/*.py")]):
        digest.update(source.read_bytes())
    digest.update(f"|torch {torch.__version__}|aoti {VERSION}".encode())
    return digest.hexdigest()[:24]


def build_package(generator: nn.Module, kT: float, path: PathLike, n_atoms: int,
                  inductor_configs: Optional[Dict[str, Any]] = None, dtype: torch.dtype = torch.float64) -> Path:
    """Export and AOT-compile ``EnergyForce(generator, kT)`` for (n_atoms, 3) float64 positions, the flow
    computing in ``dtype``, into the package ``path`` (written atomically). Raises
    :class:`AOTIUnavailable` with the reason on failure."""
    import copy

    from ..io import atomic_write

    generator = copy.deepcopy(generator).to(dtype).eval().requires_grad_(False)
    module = EnergyForce(generator, kT).eval()
    example = torch.zeros(n_atoms, 3, dtype=torch.float64)
    example[:, 0] = 0.15 * torch.arange(n_atoms, dtype=torch.float64)  # any finite frame: shapes only
    example[1::2, 1] = 0.1
    try:
        with torch.no_grad():
            program = torch.export.export(module, (example,), strict=False)
            with atomic_write(path, suffix=".pt2") as tmp:
                torch._inductor.aoti_compile_and_package(program, package_path=str(tmp),
                                                          inductor_configs=inductor_configs)
    except Exception as exc:  # compiler missing, tracing failure, ...: the caller falls back
        raise AOTIUnavailable(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    return Path(path)


def aoti_package(model: torch.jit.ScriptModule, generator_factory: Callable[[], nn.Module], kT: float,
                 n_atoms: int, log=None, rebuild: bool = False, name: str = "the model",
                 dtype: torch.dtype = torch.float64) -> Path:
    """The cached package of the exported ``model`` (``name``: its file, for messages) computing in
    ``dtype``, built first if it is not cached (or if ``rebuild``).

    ``generator_factory()`` returns the model's generator (only called when building); ``log`` (default:
    print to stderr) receives the progress messages."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    path = cache_dir() / "aoti" / f"{cache_key(model, dtype)}.pt2"
    if path.is_file() and not rebuild:
        return path
    log(f"smoothflow: building the {str(dtype).replace('torch.', '')} AOTInductor backend of {name} (once "
        f"per model, dtype and torch version; this takes a few minutes) -> {path}")
    start = time.perf_counter()
    build_package(generator_factory(), kT, path, n_atoms, dtype=dtype)
    log(f"smoothflow: AOTInductor backend built in {time.perf_counter() - start:.0f} s")
    return path


def aoti_energy(model: torch.jit.ScriptModule, generator_factory: Callable[[], nn.Module], log=None,
                name: str = "the model", dtype: torch.dtype = torch.float64) -> "AOTIEnergy":
    """The :class:`AOTIEnergy` of an exported ``model`` (``generator_factory()``: its eager generator)
    computing in ``dtype``, from the cache or built now; a cached package that does not load is rebuilt once.
    :class:`AOTIUnavailable` where the model has no hand-written gradient pass or the build fails."""
    import json

    from ..units import kT

    metadata: Dict[str, Any] = json.loads(model.metadata)
    if not metadata.get("analytic_gradient", False):
        raise AOTIUnavailable(f"{name} has no hand-written gradient pass (analytic_gradient is false: "
                              f"a {metadata.get('kind', '?')} flow); the aoti backend compiles that pass")
    args = (model, generator_factory, kT(float(metadata["temperature"])), int(metadata["atom_count"]))
    package = aoti_package(*args, log=log, name=name, dtype=dtype)
    try:
        return AOTIEnergy(package, int(metadata["atom_count"]))
    except AOTIUnavailable:
        return AOTIEnergy(aoti_package(*args, log=log, rebuild=True, name=name, dtype=dtype),
                          int(metadata["atom_count"]))


class AOTIEnergy:
    """positions (N, 3) nm (numpy) -> (energy kJ/mol, forces (N, 3) kJ/mol/nm numpy), by a loaded package.

    Reuses one input tensor (no per-call allocation on the way in)."""

    def __init__(self, package: PathLike, n_atoms: int):
        try:
            self.runner = torch._inductor.aoti_load_package(str(package))
        except Exception as exc:
            raise AOTIUnavailable(f"cannot load {package}: {type(exc).__name__}: {exc}") from exc
        self.n_atoms = n_atoms
        self._x = torch.zeros(n_atoms, 3, dtype=torch.float64)
        self._x_np = self._x.numpy()

    def __call__(self, positions: np.ndarray) -> Tuple[float, np.ndarray]:
        self._x_np[...] = positions
        energy, forces = self.runner(self._x)
        return float(energy[0]), forces.numpy()


def aoti_python_force(energy: AOTIEnergy, atoms: Optional[Iterable[int]] = None):
    """An ``openmm.PythonForce`` evaluating ``energy`` (an :class:`AOTIEnergy`), on ``atoms`` of a larger
    system if given."""
    import openmm

    def compute(state):
        positions = state.getPositions(asNumpy=True)._value  # nm: OpenMM's internal unit
        if not np.isfinite(positions).all():
            raise ValueError("smoothflow: positions contain NaN or inf")
        return energy(positions)

    force = openmm.PythonForce(compute)
    if atoms is not None:
        force.setParticles(list(atoms))
    return force
