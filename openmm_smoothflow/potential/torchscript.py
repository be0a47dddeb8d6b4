"""Export of a trained flow to ONE TorchScript energy file, and reading it back.

The exported file is ONE TorchScript module:
``forward(positions (N, 3) nm, float32 or float64, boxvectors (3, 3) nm or None) -> energy (scalar,
kJ/mol, same dtype)``, energy = u(x) * kT with u = -log p(x) the flow energy in kT at the model's
temperature. With box vectors (openmm-torch passes them when the TorchForce uses periodic boundary
conditions) the molecule is first made whole by minimum image along its Z-matrix bonds
(:class:`.periodic.MakeWhole`), so every periodic image of every atom gives the same energy and forces. The module
carries its metadata as a JSON string attribute ``metadata`` (atom count, element symbols in order,
temperature, IC ranges, model kind, provenance; atom names, residue names and indices and the bond
graph where known; ``molecule_pdb``, the PDB text of the molecule at a start structure, when the
export was given one), readable with plain ``torch.jit.load``.
"""

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..io import atomic_write
from ..units import PathLike, kT as kT_kjmol
from .periodic import MakeWhole

FORMAT = "openmm_smoothflow/energy-v1"


class EnergyModule(nn.Module):
    """positions (N, 3) nm [, box vectors (3, 3) nm] -> energy kJ/mol; wraps a generator whose forward
    gives u (B,) in kT."""

    metadata: str

    def __init__(self, generator: nn.Module, kT: float, metadata: Dict[str, Any], dtype: torch.dtype):
        super().__init__()
        self.generator = generator.to(dtype)
        self.kT = kT
        self.dtype = dtype
        self.metadata = json.dumps(metadata, sort_keys=True)
        self.make_whole = MakeWhole.from_zmatrix(generator.zmatrix)

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tensor:
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("smoothflow: positions contain NaN or inf")
        x = positions.to(self.dtype)
        if boxvectors is not None:
            x = self.make_whole(x, boxvectors.to(self.dtype))
        u = self.generator(x.unsqueeze(0))
        return (u[0] * self.kT).to(positions.dtype)


def export(generator: nn.Module, path: PathLike, provenance: Optional[Dict[str, Any]] = None,
           dtype: torch.dtype = torch.float64, analytic_gradient: Optional[bool] = None,
           molecule_pdb: Optional[str] = None) -> Dict[str, Any]:
    """Script the generator's energy and write it atomically to ``path``; returns the metadata.

    ``dtype`` is the precision the flow computes in (float64 by default: NVE energy conservation wants
    it); inputs of either precision are accepted and the energy is returned in the input's precision.
    ``analytic_gradient`` (default: wherever the transforms support it, i.e. the smooth flow): the
    module computes its force by a hand-written reverse pass through the coupling layers
    (``BoltzmannGenerator.use_analytic_gradient``), several times faster per MD step than autograd;
    the exported energy is then differentiable once only (forces, not Hessians). ``molecule_pdb``: PDB
    text of the molecule (``md.molecule.pdb_text``), stored in the metadata so that ``smoothflow md``
    finds the topology and a start structure in the model.
    """
    scripted, metadata = script_energy(generator, provenance, dtype, analytic_gradient, molecule_pdb)
    with atomic_write(path) as tmp:
        scripted.save(str(tmp))
    return metadata


def script_energy(generator: nn.Module, provenance: Optional[Dict[str, Any]] = None,
                  dtype: torch.dtype = torch.float64, analytic_gradient: Optional[bool] = None,
                  molecule_pdb: Optional[str] = None) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """The scripted energy module :func:`export` writes (same arguments), in memory, and its metadata."""
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
    metadata.update(topology_metadata(generator.zmatrix))
    if molecule_pdb is not None:
        metadata["molecule_pdb"] = str(molecule_pdb)
    module = EnergyModule(module_generator, kT_kjmol(metadata["temperature"]), metadata, dtype)
    return torch.jit.script(module), metadata


REQUIRED_KEYS = ("atom_count", "elements", "temperature")


def topology_metadata(zmatrix) -> Dict[str, Any]:
    """What an export records of its molecule for ``FlowPotential.checkTopology``: ``atom_names``,
    ``residue_names`` and ``residue_indices`` (per atom) and ``bonds`` (the bond graph, index pairs)
    where the Z-matrix knows them."""
    out: Dict[str, Any] = {}
    if zmatrix.atom_names is not None:
        out["atom_names"] = list(zmatrix.atom_names)
    if zmatrix.residue_names is not None:
        out["residue_names"] = list(zmatrix.residue_names)
    if getattr(zmatrix, "residue_indices", None) is not None:
        out["residue_indices"] = [int(i) for i in zmatrix.residue_indices]
    if zmatrix.graph_bonds is not None:
        out["bonds"] = sorted(sorted([int(a), int(b)]) for a, b in zmatrix.graph_bonds)
    return out


def is_export(path: PathLike) -> bool:
    """True for a TorchScript archive (an export), False for anything else (a ``torch.save`` checkpoint,
    a file that is not a zip archive); reads the archive's file list only."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _is_training_checkpoint(path: Path) -> bool:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("generator"), dict) and "architecture" in obj["generator"]


def load_model(path: PathLike) -> torch.jit.ScriptModule:
    """Load an exported model, with clear errors for a missing, corrupt or foreign file (and for a
    training checkpoint, which must be exported first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"smoothflow model file not found: {path}")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError variants for bad archives
        if _is_training_checkpoint(path):
            raise ValueError(f"{path} is a training checkpoint, not an exported model: run "
                             f"`smoothflow export {path} -o model.pt` and use model.pt") from None
        raise ValueError(f"{path} is not a readable TorchScript model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not hasattr(module, "metadata"):
        raise ValueError(f"{path} is TorchScript but not a smoothflow export (no metadata attribute)")
    parse_metadata(module, path)
    return module


def parse_metadata(module: torch.jit.ScriptModule, path: PathLike = "model") -> Dict[str, Any]:
    """The metadata dict of a loaded export; ValueError for a foreign TorchScript file."""
    try:
        meta = json.loads(module.metadata)
    except Exception as exc:
        raise ValueError(f"{path} is TorchScript but not a smoothflow export (its metadata is not JSON: "
                         f"{type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is TorchScript but not a smoothflow export (its metadata is not a JSON object)")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a smoothflow export of this version (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: smoothflow metadata without {', '.join(missing)}")
    return meta


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """The metadata dict of an exported model (atom_count, elements, temperature, ...)."""
    return parse_metadata(load_model(path), path)
