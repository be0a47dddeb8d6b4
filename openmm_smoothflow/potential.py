"""A trained flow as an OpenMM potential: TorchScript export, FlowPotential, TorchForce, createSystem.

The exported file is ONE TorchScript module:
``forward(positions (N, 3) nm, float32 or float64) -> energy (scalar, kJ/mol, same dtype)``,
energy = u(x) * kT with u = -log p(x) the flow energy in kT at the model's temperature. The module
carries its metadata as a JSON string attribute ``metadata`` (atom count, element symbols in order,
temperature, IC ranges, model kind, provenance), readable with plain ``torch.jit.load``.
"""

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
from torch import Tensor, nn

from .io import atomic_write
from .training.data import kT as kT_kjmol

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


def export(generator: nn.Module, path: Union[str, Path], provenance: Optional[Dict[str, Any]] = None,
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


def load_model(path: Union[str, Path]) -> torch.jit.ScriptModule:
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


def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The metadata dict of an exported model (atom_count, elements, temperature, ...)."""
    return json.loads(load_model(path).metadata)


class FlowPotential:
    """An exported flow as an OpenMM potential (OpenMM units; camelCase as in openmm-ml).

    >>> potential = FlowPotential("model.pt")
    >>> system = potential.createSystem(pdb.topology)
    """

    def __init__(self, modelPath: Union[str, Path]):
        self.path = Path(modelPath)
        self.module = load_model(self.path)
        self.metadata: Dict[str, Any] = json.loads(self.module.metadata)

    @property
    def temperature(self) -> float:
        """The temperature (K) the flow was trained at; the energy is u * kT at this temperature."""
        return float(self.metadata["temperature"])

    def checkTopology(self, topology, atoms: Optional[Iterable[int]] = None) -> None:
        """Raise ValueError naming the first mismatch between the model and ``topology`` (or its ``atoms``)."""
        topo_atoms = list(topology.atoms())
        selected = [topo_atoms[i] for i in atoms] if atoms is not None else topo_atoms
        expected: List[str] = self.metadata["elements"]
        if len(selected) != self.metadata["atom_count"]:
            raise ValueError(f"the model was trained on {self.metadata['atom_count']} atoms, "
                             f"the topology has {len(selected)}")
        for i, (atom, symbol) in enumerate(zip(selected, expected)):
            got = atom.element.symbol if atom.element is not None else "?"
            if got != symbol:
                raise ValueError(f"element mismatch at atom {i} ({atom.name} of {atom.residue.name}"
                                 f"{atom.residue.id}): topology has {got}, the model expects {symbol}")

    def createForce(self, topology=None, atoms: Optional[Iterable[int]] = None, forceGroup: int = 0,
                    backend: str = "torchforce"):
        """The flow as an OpenMM Force (on ``atoms`` of a larger system if given).

        ``backend="torchforce"``: ``openmmtorch.TorchForce`` running the exported TorchScript (the
        plugin path; serialisable, every platform). ``backend="compiled"``: ``openmm.PythonForce``
        around a ``torch.compile``-d energy+force of the same weights (:mod:`.compiled`), exact to the
        TorchScript energies, several times faster at batch 1 on CPU; compiled once per process.
        """
        if topology is not None:
            self.checkTopology(topology, atoms)
        if backend == "compiled":
            from .compiled import compiled_python_force

            force = compiled_python_force(self.generator(), self.temperature, atoms)
        elif backend == "torchforce":
            import openmmtorch

            module = self.module
            if atoms is not None:
                module = torch.jit.script(_AtomSubset(self.module, list(atoms)))
            force = openmmtorch.TorchForce(module)
        else:
            raise ValueError(f"backend must be 'torchforce' or 'compiled', not {backend!r}")
        force.setForceGroup(forceGroup)
        return force

    def generator(self):
        """The eager BoltzmannGenerator rebuilt from the file's metadata and weights (float64)."""
        from .flows.generator import BoltzmannGenerator
        from .flows.ic import ZMatrix

        meta = self.metadata
        generator = BoltzmannGenerator(ZMatrix.from_dict(meta["zmatrix"]), meta["elements"], meta["config"])
        stored = self.module.state_dict()  # TorchScript also lists non-persistent buffers: take ours only
        generator.to(torch.float64).load_state_dict({k: stored["generator." + k] for k in generator.state_dict()})
        return generator.eval()

    def addForces(self, topology, system, atoms: Optional[Iterable[int]] = None, forceGroup: int = 0,
                  backend: str = "torchforce") -> None:
        system.addForce(self.createForce(topology, atoms, forceGroup, backend))

    def createSystem(self, topology, removeCMMotion: bool = True, backend: str = "torchforce"):
        """A System with element masses, the flow force and (by default) a CMMotionRemover."""
        import openmm

        self.checkTopology(topology)
        system = openmm.System()
        for atom in topology.atoms():
            system.addParticle(atom.element.mass if atom.element is not None else 0.0)
        self.addForces(topology, system, backend=backend)
        if removeCMMotion:
            system.addForce(openmm.CMMotionRemover())
        return system


def deserializeSystem(xml: str):
    """``XmlSerializer.deserialize`` for Systems that contain TorchForces.

    The TorchForce deserialiser of the pinned openmm-torch CPU build (1.10) crashes the process, so
    this rebuilds each TorchForce in Python from the model bytes embedded in the XML
    (``encodedFileContents``) and deserialises every other force with OpenMM, keeping force order,
    force groups and the TorchForce flags. ``XmlSerializer.serialize`` itself works and is the writer.
    """
    import io
    import xml.etree.ElementTree as ET

    import openmm
    import openmmtorch

    root = ET.fromstring(xml)
    forces_node = root.find("Forces")
    force_nodes = list(forces_node) if forces_node is not None else []
    for node in force_nodes:
        forces_node.remove(node)
    system = openmm.XmlSerializer.deserialize(ET.tostring(root, encoding="unicode"))
    for node in force_nodes:
        if node.get("type") != "TorchForce":
            system.addForce(openmm.XmlSerializer.deserialize(ET.tostring(node, encoding="unicode")))
            continue
        module = torch.jit.load(io.BytesIO(bytes.fromhex(node.get("encodedFileContents"))), map_location="cpu")
        force = openmmtorch.TorchForce(module)
        force.setForceGroup(int(node.get("forceGroup", "0")))
        force.setOutputsForces(node.get("outputsForces", "0") == "1")
        force.setUsesPeriodicBoundaryConditions(node.get("usesPeriodic", "0") == "1")
        for param in node.iter("GlobalParameter"):
            force.addGlobalParameter(param.get("name"), float(param.get("default")))
        for deriv in node.iter("ParameterDerivative"):
            force.addEnergyParameterDerivative(deriv.get("name"))
        for prop in node.iter("Property"):
            force.setProperty(prop.get("name"), prop.get("value"))
        system.addForce(force)
    return system


class _AtomSubset(nn.Module):
    """Applies an exported model to a subset of a larger system's atoms."""

    def __init__(self, model: torch.jit.ScriptModule, atoms: List[int]):
        super().__init__()
        self.model = model
        self.register_buffer("atoms", torch.tensor(atoms, dtype=torch.long))

    def forward(self, positions: Tensor) -> Tensor:
        return self.model(positions.index_select(0, self.atoms))


# --- `smoothflow export` ---------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (.pt) written by `smoothflow train`")
    parser.add_argument("-o", "--output", required=True, help="TorchScript model file to write")
    parser.add_argument("--float32", action="store_true", help="compute in float32 instead of float64")


def run(args) -> int:
    from .training.checkpoint import load_generator

    generator, info = load_generator(args.checkpoint)
    provenance = dict(info.get("provenance", {}))
    if "config" in info:  # the training configuration: data, split, loss weights
        provenance["training_config"] = json.loads(info["config"])
    meta = export(generator, args.output, provenance=provenance,
                  dtype=torch.float32 if args.float32 else torch.float64)
    print(f"wrote {args.output}: {meta['kind']} flow, {meta['atom_count']} atoms, {meta['temperature']} K, "
          f"{meta['n_parameters']:,} parameters")
    return 0
