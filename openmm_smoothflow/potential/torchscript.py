"""Export of a trained flow to ONE TorchScript energy file, and reading it back.

The exported file is ONE TorchScript module:
``forward(positions (N, 3) nm, float32 or float64) -> energy (scalar, kJ/mol, same dtype)``,
energy = u(x) * kT with u = -log p(x) the flow energy in kT at the model's temperature. The module
carries its metadata as a JSON string attribute ``metadata`` (atom count, element symbols in order,
temperature, IC ranges, model kind, provenance), readable with plain ``torch.jit.load``.
"""

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..io import atomic_write
from ..units import PathLike, kT as kT_kjmol

FORMAT = "openmm_smoothflow/energy-v1"


class EnergyModule(nn.Module):
    """positions (N, 3) nm -> energy kJ/mol; wraps a generator whose forward gives u (B,) in kT."""

    metadata: str

    def __init__(self, generator: nn.Module, kT: float, metadata: Dict[str, Any], dtype: torch.dtype):
        super().__init__()
        self.generator = generator.to(dtype)
        self.kT = kT
        self.dtype = dtype
        self.metadata = json.dumps(metadata, sort_keys=True)

    def forward(self, positions: Tensor) -> Tensor:
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("smoothflow: positions contain NaN or inf")
        u = self.generator(positions.to(self.dtype).unsqueeze(0))
        return (u[0] * self.kT).to(positions.dtype)


def export(generator: nn.Module, path: PathLike, provenance: Optional[Dict[str, Any]] = None,
           dtype: torch.dtype = torch.float64, analytic_gradient: Optional[bool] = None) -> Dict[str, Any]:
    """Script the generator's energy and write it atomically to ``path``; returns the metadata.

    ``dtype`` is the precision the flow computes in (float64 by default: NVE energy conservation wants
    it); inputs of either precision are accepted and the energy is returned in the input's precision.
    ``analytic_gradient`` (default: wherever the transforms support it, i.e. the smooth flow): the
    module computes its force by a hand-written reverse pass through the coupling layers
    (``BoltzmannGenerator.use_analytic_gradient``), several times faster per MD step than autograd;
    the exported energy is then differentiable once only (forces, not Hessians).
    """
    import copy

    if getattr(generator, "inverted", False):
        raise ValueError("only the density-direction orientation (analytic energy) can be exported")
    module_generator = copy.deepcopy(generator).eval().requires_grad_(False)  # MD needs position gradients only
    if analytic_gradient is None:
        analytic_gradient = all(getattr(layer.transform, "has_jacobian", False)
                                for layer in getattr(generator, "layers", []))
    if analytic_gradient:
        module_generator.use_analytic_gradient()
    metadata = dict(generator.metadata())
    metadata.update(format=FORMAT, dtype=str(dtype).replace("torch.", ""), provenance=provenance or {},
                    analytic_gradient=bool(analytic_gradient))
    module = EnergyModule(module_generator, kT_kjmol(metadata["temperature"]), metadata, dtype)
    scripted = torch.jit.script(module)
    with atomic_write(path) as tmp:
        scripted.save(str(tmp))
    return metadata


def load_model(path: PathLike) -> torch.jit.ScriptModule:
    """Load an exported model, with clear errors for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"smoothflow model file not found: {path}")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError variants for bad archives
        raise ValueError(f"{path} is not a readable TorchScript model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not hasattr(module, "metadata"):
        raise ValueError(f"{path} is TorchScript but not a smoothflow export (no metadata attribute)")
    return module


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """The metadata dict of an exported model (atom_count, elements, temperature, ...)."""
    return json.loads(load_model(path).metadata)
