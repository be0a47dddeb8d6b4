"""The TorchForce backend: ``openmmtorch.TorchForce`` running the exported TorchScript module.

The plugin path: serialisable, every platform, periodic boxes (``torch_force(..., periodic=True)``).
The pinned plugin's own TorchForce deserialiser crashes the process, so nothing here goes through it:
:func:`deserializeSystem` reads serialised Systems back, and :func:`install_copy_hooks` makes
``copy.deepcopy`` of TorchForces and of Systems holding them (what openmm-ml does) rebuild them in Python.
"""
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn


def import_openmmtorch():
    """The openmm-torch plugin's module ``openmmtorch``, or an ImportError that says how to install it.

    pip metadata cannot require "either" of its two builds, so the package does not depend on one.
    """
    try:
        import openmmtorch
    except ModuleNotFoundError as exc:
        if exc.name != "openmmtorch":
            raise
        raise ImportError(
            "the openmm-torch plugin (module `openmmtorch`) is not installed; install conda-forge's "
            "`openmm-torch` (conda install -c conda-forge openmm-torch) or the PyPI CPU build "
            "`acellera-openmmtorch-cpu` (pip install acellera-openmmtorch-cpu, or this package's `cpu` extra)"
        ) from exc
    return openmmtorch


def torch_force(module: torch.jit.ScriptModule, atoms: Optional[Iterable[int]] = None, periodic: bool = False,
                scale: Optional[str] = None):
    """An ``openmmtorch.TorchForce`` of an exported ``module`` (on ``atoms`` of a larger system if given).

    ``periodic``: the force uses periodic boundary conditions, openmm-torch passes the box vectors and
    the module makes the molecule whole (:mod:`.periodic`) before its internal coordinates. Exports
    whose ``forward`` takes positions only (written before periodic support) are wrapped in
    :class:`.periodic.WithBox`, which does the same from their Z-matrix metadata. ``scale``: the name
    of a global parameter (default 1) the energy is multiplied by (openmm-ml's ``lambda_interpolate``).
    Installs the safe copies of :func:`install_copy_hooks` (``copy.deepcopy`` of the force or its System).

    Exports with the hand-written gradient pass (``metadata["analytic_gradient"]``, the smooth flow) run
    as :class:`EnergyForces` with ``setOutputsForces(True)``: the module returns the forces itself, so
    openmm-torch runs no autograd backward and the pass builds no graph (6,646 operations per MD step
    against 8,406 for the differentiated energy). Other exports return the energy and openmm-torch
    differentiates it.
    """
    from .periodic import WithBox, takes_box

    openmmtorch = import_openmmtorch()
    install_copy_hooks()
    outputs_forces = has_force_pass(module)
    if outputs_forces:
        module = torch.jit.script(EnergyForces(module, atoms, periodic, scale is not None))
    else:
        if not takes_box(module) and (periodic or atoms is not None or scale is not None):
            module = torch.jit.script(WithBox(module))
        if atoms is not None:
            module = torch.jit.script(_AtomSubset(module, list(atoms)))
        if scale is not None:
            module = torch.jit.script(_ScaledPeriodic(module) if periodic else _Scaled(module))
    force = openmmtorch.TorchForce(module)
    force.setOutputsForces(outputs_forces)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if scale is not None:
        force.addGlobalParameter(scale, 1.0)
    return force


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

    import_openmmtorch()  # a clear error before any work when the plugin is missing
    system, force_nodes = _system_without_forces(xml)
    for node in force_nodes:
        if node.get("type") != "TorchForce":
            if any(inner.get("type") == "TorchForce" for inner in node.iter()):
                raise ValueError(f"deserializeSystem: a {node.get('type')} holds a TorchForce, which only "
                                 "the crashing plugin deserialiser reads; copy such Systems in memory "
                                 "(copy.deepcopy) instead of through XML")
            system.addForce(openmm.XmlSerializer.deserialize(ET.tostring(node, encoding="unicode")))
            continue
        module = torch.jit.load(io.BytesIO(bytes.fromhex(node.get("encodedFileContents"))), map_location="cpu")
        system.addForce(_new_torch_force(
            module, int(node.get("forceGroup", "0")), node.get("name"), node.get("outputsForces", "0") == "1",
            node.get("usesPeriodic", "0") == "1",
            [(p.get("name"), float(p.get("default"))) for p in node.iter("GlobalParameter")],
            [d.get("name") for d in node.iter("ParameterDerivative")],
            {p.get("name"): p.get("value") for p in node.iter("Property")}))
    return system


def _new_torch_force(module, group: int, name: Optional[str], outputs_forces: bool, periodic: bool,
                     parameters: List[Tuple[str, float]], derivatives: List[str], properties: Dict[str, str]):
    """A TorchForce of ``module`` with the given settings (the one place both rebuild paths set them)."""
    force = import_openmmtorch().TorchForce(module)
    force.setForceGroup(group)
    if name:
        force.setName(name)
    force.setOutputsForces(outputs_forces)
    force.setUsesPeriodicBoundaryConditions(periodic)
    for pname, default in parameters:
        force.addGlobalParameter(pname, default)
    for dname in derivatives:
        force.addEnergyParameterDerivative(dname)
    for key, value in properties.items():
        force.setProperty(key, value)
    return force


def _is_torch_force(force) -> bool:
    openmmtorch = sys.modules.get("openmmtorch")
    return openmmtorch is not None and bool(openmmtorch.TorchForce.isinstance(force))


def clone_force(force):
    """A copy of ``force`` that never goes through the TorchForce XML deserialiser: a TorchForce is
    rebuilt around the same TorchScript module (``getModule()``) with the same settings, every other
    force is ``XmlSerializer.clone``-d as OpenMM does."""
    import openmm

    if _is_torch_force(force):
        old = import_openmmtorch().TorchForce.cast(force)
        return _new_torch_force(
            old.getModule(), old.getForceGroup(), old.getName(), old.getOutputsForces(),
            old.usesPeriodicBoundaryConditions(),
            [(old.getGlobalParameterName(i), old.getGlobalParameterDefaultValue(i))
             for i in range(old.getNumGlobalParameters())],
            [old.getEnergyParameterDerivativeName(i) for i in range(old.getNumEnergyParameterDerivatives())],
            dict(old.getProperties().items()))
    return openmm.XmlSerializer.clone(force)


def clone_system(system):
    """A copy of ``system`` (particles, constraints, virtual sites, box, forces in order) whose
    TorchForces are rebuilt by :func:`clone_force` instead of the crashing XML deserialiser."""
    import openmm

    new, _ = _system_without_forces(openmm.XmlSerializer.serialize(system))
    for force in system.getForces():
        new.addForce(clone_force(force))
    return new


def _system_without_forces(xml: str):
    """(the System of a System XML with an empty force list, the XML nodes of its forces)."""
    import xml.etree.ElementTree as ET

    import openmm

    root = ET.fromstring(xml)
    forces_node = root.find("Forces")
    force_nodes = list(forces_node) if forces_node is not None else []
    for node in force_nodes:
        forces_node.remove(node)
    return openmm.XmlSerializer.deserialize(ET.tostring(root, encoding="unicode")), force_nodes


_ORIGINAL_COPIES: Dict[str, Any] = {}


def install_copy_hooks() -> None:
    """Make ``copy.copy`` / ``copy.deepcopy`` of OpenMM Forces and Systems that contain TorchForces safe.

    OpenMM copies a Force with ``XmlSerializer.clone`` and a System through its XML, and the pinned
    openmm-torch build's TorchForce deserialiser crashes the process. openmm-ml does both (its
    interpolation deep-copies each ML force, its mechanical embedding and users deep-copy Systems), so
    ``openmm.Force.__copy__`` and ``openmm.System.__copy__`` are wrapped: a TorchForce and a System
    holding one are copied by :func:`clone_force` / :func:`clone_system`, every other object exactly as
    before. Installed once, by the first :func:`torch_force`. (A TorchForce inside a ``CustomCVForce``
    still crashes that build: OpenMM clones collective variables through XML in C++ when it creates
    the Context; :func:`torch_force`'s ``scale`` is the way to interpolate.)
    """
    import openmm

    if _ORIGINAL_COPIES:
        return
    force_copy, system_copy = openmm.Force.__copy__, openmm.System.__copy__
    _ORIGINAL_COPIES.update(force=force_copy, system=system_copy)

    def force_copy_safe(self):
        return clone_force(self) if _is_torch_force(self) else force_copy(self)

    def system_copy_safe(self):
        if any(_is_torch_force(f) for f in self.getForces()):
            return clone_system(self)
        return system_copy(self)

    openmm.Force.__copy__ = force_copy_safe
    openmm.System.__copy__ = system_copy_safe


def has_force_pass(module: torch.jit.ScriptModule) -> bool:
    """Whether an exported energy module carries a generator with the hand-written gradient pass."""
    import json

    return (all(hasattr(module, name) for name in ("generator", "metadata", "kT", "dtype"))
            and bool(json.loads(module.metadata).get("analytic_gradient", False)))


class EnergyForces(nn.Module):
    """An export's energy and forces by its generator's hand-written pass (``_energy_and_gradient``), in
    openmm-torch's argument order for ``setOutputsForces(True)``.

    ``forward(positions (N, 3) nm [, boxvectors (3, 3) nm if periodic] [, scale if scaled]) -> (energy
    kJ/mol (scalar), forces (N, 3) kJ/mol/nm)``, both in the positions' dtype and times ``scale``. With
    ``atoms`` the flow sees those rows of a larger system and the other atoms get zero force. With a box
    the molecule is first made whole (:class:`.periodic.MakeWhole`; constant lattice shifts, so the
    forces on the given positions are those on the whole molecule). Positions must be finite.
    """

    periodic: bool
    scaled: bool
    subset: bool

    def __init__(self, model: torch.jit.ScriptModule, atoms: Optional[Iterable[int]] = None,
                 periodic: bool = False, scaled: bool = False):
        from .periodic import MakeWhole

        super().__init__()
        self.generator = model.generator
        self.kT = float(model.kT)
        self.dtype = model.dtype
        self.make_whole = MakeWhole.from_metadata(model.metadata)
        self.periodic, self.scaled = bool(periodic), bool(scaled)
        self.subset = atoms is not None
        self.register_buffer("atoms", torch.tensor(list(atoms) if atoms is not None else [], dtype=torch.long))

    def forward(self, positions: Tensor, arg1: Optional[Tensor] = None,
                arg2: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        box = arg1 if self.periodic else None
        scale = arg2 if self.periodic else arg1
        # all of it without grad: openmm-torch hands positions that require grad, and any op on them
        # outside no_grad makes the TorchScript executor wrap the whole pass in differentiable graphs
        # (one detach per operation: +26% operations inside OpenMM, +55% when called from Python)
        with torch.no_grad():
            x = positions.index_select(0, self.atoms) if self.subset else positions
            if not bool(torch.isfinite(x).all()):
                raise ValueError("smoothflow: positions contain NaN or inf")
            x = x.to(self.dtype)
            if box is not None:
                x = self.make_whole(x, box.to(self.dtype))
            energy, grad = self.generator._energy_and_gradient(x.unsqueeze(0))
            energy, forces = energy[0] * self.kT, grad[0] * (-self.kT)
            if self.scaled and scale is not None:
                energy, forces = energy * scale.to(energy.dtype), forces * scale.to(forces.dtype)
            forces = forces.to(positions.dtype)
            if self.subset:
                forces = torch.zeros_like(positions).index_copy(0, self.atoms, forces)
            return energy.to(positions.dtype), forces


class _AtomSubset(nn.Module):
    """Applies an exported model to a subset of a larger system's atoms."""

    def __init__(self, model: torch.jit.ScriptModule, atoms: List[int]):
        super().__init__()
        self.model = model
        self.register_buffer("atoms", torch.tensor(atoms, dtype=torch.long))

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tensor:
        return self.model(positions.index_select(0, self.atoms), boxvectors)


class _Scaled(nn.Module):
    """energy * a global parameter (openmm-torch passes it after the positions)."""

    def __init__(self, model: torch.jit.ScriptModule):
        super().__init__()
        self.model = model

    def forward(self, positions: Tensor, scale: Tensor) -> Tensor:
        return self.model(positions, None) * scale.to(positions.dtype)


class _ScaledPeriodic(nn.Module):
    """energy * a global parameter, periodic (openmm-torch passes it after the box vectors)."""

    def __init__(self, model: torch.jit.ScriptModule):
        super().__init__()
        self.model = model

    def forward(self, positions: Tensor, boxvectors: Tensor, scale: Tensor) -> Tensor:
        return self.model(positions, boxvectors) * scale.to(positions.dtype)
