"""A trained flow as an OpenMM potential: FlowPotential (checkTopology, createForce, createSystem).

Backends, one module each, imported only when used: ``torchforce`` (:mod:`.torchforce`, the
openmm-torch plugin running the exported TorchScript), ``compiled`` (:mod:`.compiled`) and ``aoti``
(:mod:`.aoti`).
"""
import json
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch

from ..errors import SmoothflowWarning
from ..units import PathLike
from .torchscript import load_model, parse_metadata

# ``precision`` names (openmm-ml's and torch's) -> the dtype the flow computes in
PRECISIONS = {"single": torch.float32, "float32": torch.float32, "double": torch.float64, "float64": torch.float64}


class FlowPotential:
    """An exported flow as an OpenMM potential (OpenMM units; camelCase as in openmm-ml).

    >>> potential = FlowPotential("model.pt")
    >>> system = potential.createSystem(pdb.topology)
    """

    def __init__(self, modelPath: PathLike):
        self.path = Path(modelPath)
        self.module = load_model(self.path)
        self.metadata: Dict[str, Any] = parse_metadata(self.module, self.path)
        self._compiled = None  # the compiled backend's CompiledEnergy, built on first use
        self._aoti: Dict[torch.dtype, Any] = {}  # dtype -> the aoti backend's AOTIEnergy, loaded (or built and cached) on first use
        self._rescripted: Dict[str, torch.jit.ScriptModule] = {}  # exports in another precision, by dtype

    @property
    def temperature(self) -> float:
        """The temperature (K) the flow was trained at; the energy is u * kT at this temperature."""
        return float(self.metadata["temperature"])

    def checkTopology(self, topology, atoms: Optional[Iterable[int]] = None) -> None:
        """Raise ValueError naming the first mismatch between the model and ``topology`` (or its ``atoms``):
        atom count, elements, atom names, residue names, bonds. Exports without names or bond graph
        (older ones) are checked by what they have, with a SmoothflowWarning."""
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
        self._check_names_and_bonds(topology, selected)

    def _check_names_and_bonds(self, topology, selected: List[Any]) -> None:
        """Atom names, residue names and the bond graph of the export (top-level metadata, or its
        Z-matrix for older exports) against the topology's atoms ``selected``; the first mismatch named."""
        meta, zmatrix = self.metadata, self.metadata.get("zmatrix")
        if zmatrix is None:  # not a molecular flow (particle systems): elements are all there is
            return
        names = meta.get("atom_names") or zmatrix.get("atom_names")
        residues = meta.get("residue_names") or zmatrix.get("residue_names")
        bonds = meta["bonds"] if meta.get("bonds") is not None else zmatrix.get("graph_bonds")  # [] is a graph
        complete = bonds is not None  # the whole bond graph; else only the Z-matrix's (a spanning tree)
        if bonds is None and zmatrix.get("frame") is not None:
            i0, i1, i2 = zmatrix["frame"]
            bonds = [[i1, i0], [i2, i0]] + [[r[0], r[1]] for r in zmatrix["rows"]]

        def label(i: int) -> str:
            atom = selected[i]
            return f"{atom.name} of {atom.residue.name}{atom.residue.id}"

        if names is None or residues is None or not complete:
            warnings.warn(f"{self.path}: the model has no {'atom names' if names is None else 'residue names' if residues is None else 'bond graph'} "
                          "(an older export): atom order is checked by elements"
                          f"{' and Z-matrix bonds' if bonds else ''} only; re-export it for a full check",
                          SmoothflowWarning, stacklevel=4)
        for i, atom in enumerate(selected):
            if names is not None and atom.name != names[i]:
                raise ValueError(f"atom name mismatch at atom {i} ({label(i)}): the model expects {names[i]} "
                                 f"(of {residues[i] if residues else '?'}); the atoms are in another order")
            if residues is not None and atom.residue.name != residues[i]:
                raise ValueError(f"residue mismatch at atom {i} ({label(i)}): the model expects residue "
                                 f"{residues[i]}")
        if not bonds:
            return
        local = {atom.index: i for i, atom in enumerate(selected)}
        topo = set()
        for a, b in topology.bonds():
            if a.index in local and b.index in local:
                topo.add(tuple(sorted((local[a.index], local[b.index]))))
        model = {tuple(sorted((int(a), int(b)))) for a, b in bonds}
        for a, b in sorted(model - topo):
            raise ValueError(f"bond mismatch: the model bonds atom {a} ({label(a)}) to atom {b} ({label(b)}), "
                             f"the topology does not (it has {len(topo)} bonds among these atoms, the model "
                             f"{len(model)}{'' if complete else ' or more'})")
        if complete:
            for a, b in sorted(topo - model):
                raise ValueError(f"bond mismatch: the topology bonds atom {a} ({label(a)}) to atom {b} "
                                 f"({label(b)}), the model does not")

    def createForce(self, topology=None, atoms: Optional[Iterable[int]] = None, forceGroup: int = 0,
                    backend: str = "torchforce", periodic: bool = False, precision: Optional[str] = None,
                    energyScale: Optional[str] = None):
        """The flow as an OpenMM Force (on ``atoms`` of a larger system if given).

        ``periodic``: the force uses periodic boundary conditions and makes the molecule whole by
        minimum image along its bonds (:mod:`.periodic`), so any periodic image of any atom gives the
        same energy and forces (the torchforce backend). ``precision``: ``"double"``/``"float64"`` or
        ``"single"``/``"float32"``, the dtype the flow computes in (default: the file's, see
        ``metadata["dtype"]``); another one than the file's re-scripts the same weights in memory.
        ``energyScale``: the name of a global parameter (default 1) the energy is multiplied by
        (openmm-ml's ``lambda_interpolate``; the torchforce backend).

        ``backend="torchforce"``: ``openmmtorch.TorchForce`` running the exported TorchScript (the
        plugin path; serialisable, every platform). ``backend="compiled"``: ``openmm.PythonForce``
        around a ``torch.compile``-d energy+force of the same weights (:mod:`.compiled`), exact to the
        TorchScript energies, several times faster at batch 1 on CPU; compiled once per FlowPotential
        (the forces it creates share it). ``backend="aoti"``: ``openmm.PythonForce`` around the export's
        hand-written energy+force pass compiled ahead of time by AOTInductor (:mod:`.aoti`), the fastest
        on CPU; built once per model file (minutes) and cached on disk, loaded in a fraction of a second
        afterwards (one package per ``precision``; ``"single"`` about 2x faster); where it cannot be
        built, a warning and the TorchForce.
        """
        if topology is not None:
            self.checkTopology(topology, atoms)
        dtype = self.dtype_of(precision)  # a bad precision is refused for every backend
        if (periodic or energyScale) and backend != "torchforce":
            raise ValueError(f"periodic Systems and energyScale need backend='torchforce' (the {backend!r} "
                             f"backend does neither)")
        if backend == "compiled":
            from .compiled import CompiledEnergy, compiled_python_force

            if self._compiled is None:
                self._compiled = CompiledEnergy(self.generator())
            force = compiled_python_force(self._compiled, self.temperature, atoms)
        elif backend == "torchforce":
            from .torchforce import torch_force

            force = torch_force(self.module_in(precision), atoms, periodic, energyScale)
        elif backend == "aoti":
            from .aoti import AOTIUnavailable, aoti_energy, aoti_python_force

            try:
                if dtype not in self._aoti:
                    self._aoti[dtype] = aoti_energy(self.module, self.generator, name=str(self.path), dtype=dtype)
                force = aoti_python_force(self._aoti[dtype], atoms)
            except AOTIUnavailable as exc:
                warnings.warn(f"smoothflow: the aoti backend is unavailable ({exc}); using the TorchForce",
                              SmoothflowWarning, stacklevel=2)
                return self.createForce(None, atoms, forceGroup, "torchforce", precision=precision)
        else:
            raise ValueError(f"backend must be 'torchforce', 'compiled' or 'aoti', not {backend!r}")
        force.setForceGroup(forceGroup)
        return force

    def generator(self):
        """The eager BoltzmannGenerator rebuilt from the file's metadata and weights (float64)."""
        from ..flows.generator import BoltzmannGenerator
        from ..flows.ic import ZMatrix

        meta = self.metadata
        generator = BoltzmannGenerator(ZMatrix.from_dict(meta["zmatrix"]), meta["elements"], meta["config"])
        stored = self.module.state_dict()  # TorchScript also lists non-persistent buffers: take ours only
        # entries the file predates (a ring restraint's range) keep the generator's defaults (R = 0)
        generator.to(torch.float64).load_state_dict({k: stored.get("generator." + k, v)
                                                     for k, v in generator.state_dict().items()})
        return generator.eval()

    def dtype_of(self, precision: Optional[str] = None) -> torch.dtype:
        """The torch dtype of ``precision`` (see :meth:`createForce`; None: the file's)."""
        if precision is None:
            return getattr(torch, self.metadata.get("dtype", "float64"))
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)} or None (the file's, "
                             f"{self.metadata.get('dtype')}), not {precision!r}")
        return PRECISIONS[precision]

    def module_in(self, precision: Optional[str] = None) -> torch.jit.ScriptModule:
        """The exported module computing in ``precision`` (see :meth:`createForce`; None: the file's)."""
        if precision is None:
            return self.module
        dtype = self.dtype_of(precision)
        name = str(dtype).replace("torch.", "")
        if name == self.metadata.get("dtype", "float64"):
            return self.module
        if name not in self._rescripted:
            from .torchscript import script_energy

            self._rescripted[name], _ = script_energy(self.generator(), self.metadata.get("provenance"), dtype,
                                                      self.metadata.get("analytic_gradient"))
        return self._rescripted[name]

    def addForces(self, topology, system, atoms: Optional[Iterable[int]] = None, forceGroup: int = 0,
                  backend: str = "torchforce", periodic: Optional[bool] = None,
                  precision: Optional[str] = None, energyScale: Optional[str] = None) -> None:
        """Add the flow force to ``system``. ``periodic`` (default): when the topology has a box or the
        System already uses periodic boundary conditions (a PME water box), with the torchforce
        backend; the other backends stay non-periodic there, with a warning (the Context's positions
        keep molecules whole; wrapped coordinates set into it would not be)."""
        if periodic is None:
            periodic = (topology is not None and topology.getPeriodicBoxVectors() is not None) \
                or _uses_pbc(system)
            if periodic and backend != "torchforce":
                import warnings

                warnings.warn(f"smoothflow: the {backend!r} backend is not periodic; in this periodic System "
                              f"set only unwrapped positions (backend='torchforce' makes molecules whole)")
                periodic = False
        system.addForce(self.createForce(topology, atoms, forceGroup, backend, periodic, precision, energyScale))

    def createSystem(self, topology, removeCMMotion: bool = True, backend: str = "torchforce",
                     precision: Optional[str] = None):
        """A System with element masses, the flow force and (by default) a CMMotionRemover; periodic
        with the topology's box when it has one (as openmm-ml's ``createSystem``)."""
        import openmm

        self.checkTopology(topology)
        system = openmm.System()
        if topology.getPeriodicBoxVectors() is not None:
            system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
        for atom in topology.atoms():
            system.addParticle(atom.element.mass if atom.element is not None else 0.0)
        self.addForces(topology, system, backend=backend, precision=precision)
        if removeCMMotion:
            system.addForce(openmm.CMMotionRemover())
        return system


def _uses_pbc(system) -> bool:
    """``system.usesPeriodicBoundaryConditions()``, False for Forces that cannot say (Python forces)."""
    try:
        return bool(system.usesPeriodicBoundaryConditions())
    except Exception:  # OpenMMException from a Force without the method
        return False
