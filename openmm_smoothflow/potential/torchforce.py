"""The TorchForce backend: ``openmmtorch.TorchForce`` running the exported TorchScript module.

The plugin path: serialisable, every platform. :func:`deserializeSystem` reads such Systems back,
because the pinned plugin's own TorchForce deserialiser crashes the process.
"""
from typing import Iterable, List, Optional

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


def torch_force(module: torch.jit.ScriptModule, atoms: Optional[Iterable[int]] = None):
    """An ``openmmtorch.TorchForce`` of an exported ``module`` (on ``atoms`` of a larger system if given)."""
    openmmtorch = import_openmmtorch()

    if atoms is not None:
        module = torch.jit.script(_AtomSubset(module, list(atoms)))
    return openmmtorch.TorchForce(module)


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

    openmmtorch = import_openmmtorch()
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
