"""openmm-ml integration: ``MLPotential('smoothflow', modelPath='model.pt').createSystem(topology)``.

Registered through the ``openmmml.potentials`` entry point. openmm-ml imports this module when it is
imported itself, so everything heavy is imported only when a potential is created.
"""
from __future__ import annotations

try:  # openmm-ml is optional: the classes below only matter when it is installed
    from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory
except ImportError:  # pragma: no cover
    MLPotentialImpl = MLPotentialImplFactory = object


class SmoothFlowPotentialImplFactory(MLPotentialImplFactory):
    def createImpl(self, name: str, modelPath: str = None, **args) -> "SmoothFlowPotentialImpl":
        if modelPath is None:
            raise ValueError("MLPotential('smoothflow') needs modelPath='exported_model.pt'")
        return SmoothFlowPotentialImpl(modelPath)


class SmoothFlowPotentialImpl(MLPotentialImpl):
    def __init__(self, modelPath: str):
        from .flow_potential import FlowPotential

        self.potential = FlowPotential(modelPath)

    def addForces(self, topology, system, atoms, forceGroup, **args) -> None:
        self.potential.addForces(topology, system, atoms=atoms, forceGroup=forceGroup)
