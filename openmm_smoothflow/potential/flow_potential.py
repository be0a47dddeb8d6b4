"""A trained flow as an OpenMM potential: FlowPotential (checkTopology, createForce, createSystem).

Backends, one module each, imported only when used: ``torchforce`` (:mod:`.torchforce`, the
openmm-torch plugin running the exported TorchScript) and ``compiled`` (:mod:`.compiled`).
"""
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch

from ..units import PathLike
from .torchscript import load_model


class FlowPotential:
    """An exported flow as an OpenMM potential (OpenMM units; camelCase as in openmm-ml).

    >>> potential = FlowPotential("model.pt")
    >>> system = potential.createSystem(pdb.topology)
    """

    def __init__(self, modelPath: PathLike):
        self.path = Path(modelPath)
        self.module = load_model(self.path)
        self.metadata: Dict[str, Any] = json.loads(self.module.metadata)
        self._compiled = None  # the compiled backend's CompiledEnergy, built on first use

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
        TorchScript energies, several times faster at batch 1 on CPU; compiled once per FlowPotential
        (the forces it creates share it).
        """
        if topology is not None:
            self.checkTopology(topology, atoms)
        if backend == "compiled":
            from .compiled import CompiledEnergy, compiled_python_force

            if self._compiled is None:
                self._compiled = CompiledEnergy(self.generator())
            force = compiled_python_force(self._compiled, self.temperature, atoms)
        elif backend == "torchforce":
            from .torchforce import torch_force

            force = torch_force(self.module, atoms)
        else:
            raise ValueError(f"backend must be 'torchforce' or 'compiled', not {backend!r}")
        force.setForceGroup(forceGroup)
        return force

    def generator(self):
        """The eager BoltzmannGenerator rebuilt from the file's metadata and weights (float64)."""
        from ..flows.generator import BoltzmannGenerator
        from ..flows.ic import ZMatrix

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
