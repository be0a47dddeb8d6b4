"""Molecular systems: the packaged alanine dipeptide, the classical force field, platforms, contexts
(the molecule of a data file or a model: :mod:`.molecule`).

Only ``openmm`` and ``numpy`` are imported here (never torch): the evaluation worker processes of
:mod:`openmm_smoothflow.training.target` run :func:`_worker_main` from this module, and a spawned worker
that had to import torch would take seconds longer to start.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import openmm
from openmm import app, unit

from ..io import packaged
from ..units import PathLike

# The classical force field of the data protocol (paper SI-2.3): Amber99SB-ILDN with OBC implicit solvent.
DEFAULT_FORCEFIELD: Tuple[str, ...] = ("amber99sbildn.xml", "amber99_obc.xml")

_CONSTRAINTS = {
    None: None,
    "none": None,
    "hbonds": app.HBonds,
    "allbonds": app.AllBonds,
    "hangles": app.HAngles,
}


def alanine_dipeptide_pdb() -> Path:
    """Path of the packaged alanine dipeptide (ACE-ALA-NME, 22 atoms) PDB file."""
    path = packaged("alanine-dipeptide.pdb")
    if not path.is_file():  # pragma: no cover - broken installation
        raise FileNotFoundError(f"packaged alanine dipeptide PDB is missing: {path}")
    return path


def load_pdb(path: PathLike):
    """Read a PDB file (``app.PDBFile``), or the molecule a data file (``.npz``) carries
    (:class:`.molecule.Molecule`: ``topology`` and ``positions`` as a PDBFile has them)."""
    if path is None:
        raise ValueError("no molecule: give a PDB file (--pdb)")
    path = Path(path)
    if path.suffix == ".npz":
        from .molecule import from_data

        return from_data(path)
    if not path.is_file():
        raise FileNotFoundError(f"PDB file not found: {path}")
    return app.PDBFile(str(path))


def constraints_from_name(name: Union[str, None, object]) -> object:
    """``None``/"none"/"HBonds"/"AllBonds"/"HAngles" (any case) -> the ``openmm.app`` constant."""
    if name is None or not isinstance(name, str):
        return name  # None or already an openmm.app constant
    key = name.lower()
    if key not in _CONSTRAINTS:
        raise ValueError(f"unknown constraints {name!r}; choose from none, HBonds, AllBonds, HAngles")
    return _CONSTRAINTS[key]


def classical_system(
    topology: app.Topology,
    forcefield: Sequence[str] = DEFAULT_FORCEFIELD,
    constraints: Union[str, None, object] = None,
) -> openmm.System:
    """The classical System of the data protocol: ``forcefield`` files, ``NoCutoff``, no constraints.

    ``forcefield`` is a sequence of force-field XML files (a single string is accepted too);
    ``constraints`` is ``None`` (default, as the data), a name ("HBonds", ...) or an ``openmm.app``
    constant. The centre-of-mass motion remover is kept (it has no energy).
    """
    files = (forcefield,) if isinstance(forcefield, str) else tuple(forcefield)
    if not files:
        raise ValueError("forcefield needs at least one XML file")
    ff = app.ForceField(*files)
    return ff.createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=constraints_from_name(constraints)
    )


def available_platforms() -> Tuple[str, ...]:
    """Names of the OpenMM platforms this installation can use."""
    return tuple(openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms()))


def get_platform(name: str = "Reference") -> openmm.Platform:
    """The OpenMM platform called ``name`` (case-insensitive), or a ValueError listing those available."""
    available = available_platforms()
    for candidate in available:
        if candidate.lower() == str(name).lower():
            return openmm.Platform.getPlatformByName(candidate)
    raise ValueError(f"OpenMM platform {name!r} is not available; available platforms: {', '.join(available)}")


def context_properties(properties: Optional[Dict[str, object]] = None) -> Dict[str, str]:
    """OpenMM platform properties as the string dict ``openmm.Context`` takes (``None``: none)."""
    return {str(k): str(v) for k, v in (properties or {}).items()}


def make_context(
    system: openmm.System,
    platform: str = "Reference",
    platform_properties: Optional[Dict[str, str]] = None,
) -> openmm.Context:
    """A Context for single-point energies and forces (its VerletIntegrator is never stepped)."""
    integrator = openmm.VerletIntegrator(1.0 * unit.femtoseconds)
    return openmm.Context(system, integrator, get_platform(platform), context_properties(platform_properties))


def evaluate_frames(context: openmm.Context, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Potential energies (B,) kJ/mol and forces (B, N, 3) kJ/mol/nm of ``positions`` (B, N, 3) nm.

    Frames with non-finite positions, or on which OpenMM fails or returns a non-finite energy, get
    energy ``inf`` and zero forces; non-finite force entries are set to zero. Never raises for bad
    coordinates, never NaN.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n_atoms = context.getSystem().getNumParticles()
    if positions.ndim != 3 or positions.shape[1:] != (n_atoms, 3):
        raise ValueError(f"positions must have shape (B, {n_atoms}, 3), got {positions.shape}")
    n_frames = positions.shape[0]
    energies = np.full(n_frames, np.inf)
    forces = np.zeros(positions.shape, dtype=np.float64)
    finite = np.isfinite(positions).reshape(n_frames, -1).all(axis=1)
    kj = unit.kilojoule_per_mole
    kj_nm = unit.kilojoule_per_mole / unit.nanometer
    for i in np.flatnonzero(finite):
        try:
            context.setPositions(positions[i])
            state = context.getState(getEnergy=True, getForces=True)
        except openmm.OpenMMException:
            continue
        energy = state.getPotentialEnergy().value_in_unit(kj)
        if not np.isfinite(energy):
            continue
        energies[i] = energy
        f = state.getForces(asNumpy=True).value_in_unit(kj_nm)
        forces[i] = np.where(np.isfinite(f), f, 0.0)
    return energies, forces


def _worker_main() -> None:
    """Entry point of an evaluation worker process of ``training.target.OpenMMTarget``.

    Started as ``python -c "...; _worker_main()"``; it speaks ``multiprocessing.connection`` messages
    (pickles) on its stdin (requests) and on its original stdout (replies), while anything printed to
    stdout goes to stderr. First request: ``(system_xml, platform, platform_properties)``, answered by
    ``("ready", None)`` or ``("error", traceback)``; then each ``positions`` (B, N, 3) float64 array is
    answered by ``("ok", (energies, forces))`` in kJ/mol and kJ/mol/nm or ``("error", traceback)``.
    ``None`` or a closed stdin (parent gone) ends the loop. SIGINT is ignored: the parent handles
    Ctrl-C and shuts the workers down.
    """
    import signal
    import sys
    import traceback
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout.flush()
    requests = Connection(os.dup(0), writable=False)
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints must not corrupt the reply stream
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        system_xml, platform, platform_properties = requests.recv()
        try:
            system = openmm.XmlSerializer.deserialize(system_xml)
            context = make_context(system, platform, platform_properties)
        except Exception:
            replies.send(("error", traceback.format_exc()))
            return
        replies.send(("ready", None))
        while True:
            request = requests.recv()
            if request is None:
                return
            try:
                reply = ("ok", evaluate_frames(context, request))
            except Exception:
                reply = ("error", traceback.format_exc())
            replies.send(reply)
    except (EOFError, OSError):
        return  # the parent closed the pipe or is gone
    finally:
        requests.close()
        replies.close()
