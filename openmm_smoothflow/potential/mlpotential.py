"""openmm-ml integration: ``MLPotential('smoothflow', modelPath='model.pt').createSystem(topology)``.

Registered through the ``openmmml.potentials`` entry point; openmm-ml loads that entry point while
``openmmml.mlpotential`` is still being imported. This module therefore imports neither openmm-ml nor
anything heavy at import time: the factory is a plain class (openmm-ml only calls its ``createImpl``),
and the implementation class, a subclass of ``openmmml.mlpotential.MLPotentialImpl``, is built on the
first ``createImpl`` (``SmoothFlowPotentialImpl`` here is that class, made on first access). So
importing this module before or after ``openmmml`` both work.

Options, to ``MLPotential('smoothflow', ...)`` (defaults for every System) or to ``createSystem`` /
``createMixedSystem`` (for that System):

* ``modelPath`` (constructor only): the exported model file.
* ``backend`` (or openmm-ml's name ``implementation``): ``"torchforce"`` (default), ``"compiled"``,
  ``"aoti"`` -- see :meth:`FlowPotential.createForce`; periodic Systems need ``"torchforce"``.
* ``precision``: ``"double"``/``"float64"`` or ``"single"``/``"float32"``, the dtype the flow computes
  in (default: the file's).

Unknown options raise ``ValueError``. Options of openmm-ml's embeddings that openmm-ml passes on to
``addForces`` (``linkAtomDistances``, ``mlLongRange``) are accepted and left to the embedding. The flow
is local (a function of one molecule's internal coordinates): ``getMLLongRange()`` is False, so in a
periodic mixed System the mechanical embedding keeps the classical solute-solute interactions between
periodic images, and the flow makes the molecule whole by minimum image (:mod:`.periodic`).
"""
from __future__ import annotations

from typing import Any, Dict

POTENTIAL_OPTIONS = ("backend", "implementation", "precision")
EMBEDDING_OPTIONS = ("linkAtomDistances", "mlLongRange")  # openmm-ml's embeddings pass them to addForces


def _options(args: Dict[str, Any], defaults: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``backend``/``precision`` from ``args`` over ``defaults``; ValueError naming unknown options."""
    unknown = sorted(set(args) - set(POTENTIAL_OPTIONS) - set(EMBEDDING_OPTIONS))
    if unknown:
        raise ValueError(f"MLPotential('smoothflow'): unknown option(s) {unknown} to {where}; the options "
                         f"are {list(POTENTIAL_OPTIONS)} (and modelPath to the constructor)")
    if "backend" in args and "implementation" in args and args["backend"] != args["implementation"]:
        raise ValueError(f"MLPotential('smoothflow'): backend={args['backend']!r} and "
                         f"implementation={args['implementation']!r} name the same option; give one")
    options = dict(defaults)
    backend = args.get("backend", args.get("implementation"))
    if backend is not None:
        options["backend"] = backend
    if args.get("precision") is not None:
        options["precision"] = args["precision"]
    return options


class SmoothFlowPotentialImplFactory:
    """openmm-ml's factory for ``MLPotential('smoothflow', modelPath=..., [backend=..., precision=...])``."""

    def createImpl(self, name: str, modelPath: str = None, **args):
        if modelPath is None:
            raise ValueError("MLPotential('smoothflow') needs modelPath='exported_model.pt'")
        return _impl_class()(modelPath, **args)


_IMPL = []


def _impl_class():
    """``SmoothFlowPotentialImpl``, subclassing openmm-ml's ``MLPotentialImpl`` (imported now, not at import)."""
    if _IMPL:
        return _IMPL[0]
    from openmmml.mlpotential import MLPotentialImpl

    class SmoothFlowPotentialImpl(MLPotentialImpl):
        """An exported smooth flow as an openmm-ml potential (see the module docstring for options)."""

        def __init__(self, modelPath: str, **args):
            from .flow_potential import FlowPotential

            self.options = _options(args, {"backend": "torchforce", "precision": None}, "MLPotential()")
            self.potential = FlowPotential(modelPath)
            self.potential.dtype_of(self.options["precision"])  # a bad precision fails here, not later

        def addForces(self, topology, system, atoms, forceGroup, **args) -> None:
            options = _options(args, self.options, "createSystem()/createMixedSystem()")
            self.potential.addForces(topology, system, atoms=atoms, forceGroup=forceGroup,
                                     backend=options["backend"], precision=options["precision"])

        def getMLLongRange(self) -> bool:
            """The flow is local: no interactions between periodic images (False)."""
            return False

        def getSupportedEmbeddings(self) -> list:
            return ["mechanical"]

        def createMixedSystem(self, topology, system, atoms, forceGroup, interpolate, embedding,
                              returnInfo: bool = False, **args):
            """openmm-ml's mechanical embedding; with ``interpolate`` the flow's TorchForce scales its own
            energy by ``lambda_interpolate`` instead of sitting inside openmm-ml's ``CustomCVForce``
            (OpenMM clones collective variables through XML, which the pinned plugin cannot read)."""
            from openmmml.embeddings.mechanicalembedding import MechanicalEmbedding

            if not interpolate:
                return MechanicalEmbedding().createMixedSystem(self, topology, system, atoms, forceGroup, False,
                                                               returnInfo=returnInfo, **args)
            options = _options(args, self.options, "createMixedSystem()")
            info = MechanicalEmbedding().createMixedSystem(_NoMLForces(), topology, system, atoms, forceGroup,
                                                           True, returnInfo=True, **args)
            caps = list(range(topology.getNumAtoms(), info["topology"].getNumAtoms()))  # link atoms, if any
            self.potential.addForces(info["topology"], info["system"], atoms=list(atoms) + caps,
                                     forceGroup=forceGroup, backend=options["backend"],
                                     precision=options["precision"], energyScale="lambda_interpolate")
            return info if returnInfo else info["system"]

    class _NoMLForces(MLPotentialImpl):
        """The embedding's view of the flow while it builds the interpolation: local, adds nothing."""

        def addForces(self, topology, system, atoms, forceGroup, **args) -> None:
            pass

        def getMLLongRange(self) -> bool:
            return False

    SmoothFlowPotentialImpl.__module__ = __name__
    SmoothFlowPotentialImpl.__qualname__ = "SmoothFlowPotentialImpl"
    _IMPL.append(SmoothFlowPotentialImpl)
    return SmoothFlowPotentialImpl


def __getattr__(name: str):
    if name == "SmoothFlowPotentialImpl":
        return _impl_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
