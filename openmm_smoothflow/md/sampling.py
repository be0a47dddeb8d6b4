"""Classical OpenMM MD that writes training data (``smoothflow simulate``).

Defaults follow the data protocol of the paper's SI-2.3: ``amber99sbildn.xml`` + ``amber99_obc.xml``
(``systems.DEFAULT_FORCEFIELD``), ``NoCutoff``, no constraints, energy minimisation, velocities at T,
100 ps equilibration, then ``LangevinMiddleIntegrator`` (300 K, friction 1/ps, step 1 fs) with a frame
every 1000 steps (1 ps), Reference platform. The molecule is the ``pdb`` given (a PDB file, or a data
file that carries one).

The ``.npz`` written holds ``positions`` float32 (frames, N, 3) nm, ``forces`` float32 (frames, N, 3)
kJ/mol/nm, ``energies`` float64 (frames,) kJ/mol (potential energy), ``temperature`` float64 K,
``time`` float64 (frames,) ps (from the start of production), ``elements`` and ``atom_names`` (N,)
strings, ``protocol``, a JSON string of every setting (:func:`read_protocol` decodes it), and the
molecule (:mod:`.molecule`): ``molecule_pdb``, the PDB text of the topology at the start structure
(after minimisation) with every bond as CONECT, and ``bonds`` (M, 2) int32, so that every later
command finds the molecule in the data.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..io import atomic_write
from ..units import PathLike
from . import molecule, systems

DEFAULTS: Dict[str, Any] = dict(
    steps_per_frame=1000,
    equilibration_steps=100_000,
    temperature=300.0,
    friction=1.0,
    timestep_fs=1.0,
    seed=1001,
    platform="Reference",
    forcefield=systems.DEFAULT_FORCEFIELD,
    constraints=None,
    minimize=True,
)


def open_data(path: PathLike):
    """``np.load`` of a data file (no pickles), with FileNotFoundError / ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npz data file ({exc})") from exc


def read_protocol(data: Any) -> Dict[str, Any]:
    """The protocol dict stored in a data file (a path or a loaded ``np.load`` object)."""
    if isinstance(data, (str, os.PathLike)):
        with np.load(data) as npz:
            return read_protocol(npz)
    if "protocol" not in data:
        raise KeyError("this data file has no 'protocol' entry")
    return json.loads(str(data["protocol"][()]))


def simulate(
    pdb: Optional[PathLike] = None,
    n_frames: int = 1000,
    *,
    output: Optional[PathLike] = None,
    dcd: Optional[PathLike] = None,
    steps_per_frame: int = DEFAULTS["steps_per_frame"],
    equilibration_steps: int = DEFAULTS["equilibration_steps"],
    temperature: float = DEFAULTS["temperature"],
    friction: float = DEFAULTS["friction"],
    timestep_fs: float = DEFAULTS["timestep_fs"],
    seed: Optional[int] = DEFAULTS["seed"],
    platform: str = DEFAULTS["platform"],
    platform_properties: Optional[Dict[str, str]] = None,
    forcefield: Sequence[str] = DEFAULTS["forcefield"],
    constraints: Optional[str] = DEFAULTS["constraints"],
    minimize: bool = DEFAULTS["minimize"],
    progress: bool = True,
) -> Dict[str, np.ndarray]:
    """Run MD and return (and, with ``output``, write atomically) the data arrays.

    ``pdb``: PDB file (None: the packaged alanine dipeptide, with a warning). ``n_frames`` frames are
    recorded, one every ``steps_per_frame`` steps after ``equilibration_steps`` steps; ``temperature``
    K, ``friction`` 1/ps, ``timestep_fs`` fs; ``seed`` seeds both the initial velocities and the Langevin noise (``None``:
    OpenMM picks one). ``dcd``: also write the frames as a DCD trajectory (atomically, with the npz).
    Returns the dict of arrays that is stored in the ``.npz`` (see the module docstring); the measured
    production speed is under the key ``ms_per_step`` (not stored).
    """
    import openmm
    from openmm import app, unit

    if n_frames < 1 or steps_per_frame < 1 or equilibration_steps < 0:
        raise ValueError("need n_frames >= 1, steps_per_frame >= 1 and equilibration_steps >= 0")
    if pdb is None:
        import warnings

        from ..errors import SmoothflowWarning

        warnings.warn("no PDB file given: simulating the packaged alanine dipeptide", SmoothflowWarning, stacklevel=2)
    pdb_path = systems.alanine_dipeptide_pdb() if pdb is None else Path(pdb)
    pdbfile = systems.load_pdb(pdb_path)
    forcefield = (forcefield,) if isinstance(forcefield, str) else tuple(forcefield)
    system = systems.classical_system(pdbfile.topology, forcefield, constraints)
    platform_obj = systems.get_platform(platform)  # clear error before any work
    n_atoms = system.getNumParticles()

    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction / unit.picosecond, timestep_fs * unit.femtoseconds
    )
    if seed is not None:
        integrator.setRandomNumberSeed(int(seed))
    props = systems.context_properties(platform_properties)
    context = openmm.Context(system, integrator, platform_obj, props)
    context.setPositions(pdbfile.positions)
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context)
    start_xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    if seed is not None:
        context.setVelocitiesToTemperature(temperature * unit.kelvin, int(seed))
    else:
        context.setVelocitiesToTemperature(temperature * unit.kelvin)

    protocol = dict(
        pdb=str(pdb_path),
        n_atoms=n_atoms,
        n_frames=int(n_frames),
        steps_per_frame=int(steps_per_frame),
        equilibration_steps=int(equilibration_steps),
        temperature=float(temperature),
        friction_per_ps=float(friction),
        timestep_fs=float(timestep_fs),
        seed=None if seed is None else int(seed),
        platform=platform_obj.getName(),
        platform_properties=props,
        forcefield=list(forcefield),
        nonbonded_method="NoCutoff",
        constraints=None if constraints is None else str(constraints),
        minimize=bool(minimize),
        integrator="LangevinMiddleIntegrator",
        openmm_version=openmm.__version__,
        units=dict(positions="nm", forces="kJ/mol/nm", energies="kJ/mol", temperature="K", time="ps"),
    )

    positions = np.empty((n_frames, n_atoms, 3), dtype=np.float32)
    forces = np.empty((n_frames, n_atoms, 3), dtype=np.float32)
    energies = np.empty(n_frames, dtype=np.float64)
    nm = unit.nanometer
    kj = unit.kilojoule_per_mole
    kj_nm = kj / nm

    bar = _progress_bar(equilibration_steps + n_frames * steps_per_frame, progress)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        dcd_file = None
        if dcd is not None:
            dcd_tmp = stack.enter_context(atomic_write(dcd, suffix=".dcd"))
            handle = stack.enter_context(open(dcd_tmp, "wb"))
            dcd_file = app.DCDFile(
                handle, pdbfile.topology, timestep_fs * unit.femtoseconds, 0, steps_per_frame
            )
        # Equilibration, in chunks so the progress bar moves.
        bar.set_description("equilibrate")
        done = 0
        while done < equilibration_steps:
            chunk = min(10 * steps_per_frame, equilibration_steps - done)
            integrator.step(chunk)
            done += chunk
            bar.update(chunk)
        bar.set_description("production")
        start = time.perf_counter()
        for i in range(n_frames):
            integrator.step(steps_per_frame)
            state = context.getState(getPositions=True, getForces=True, getEnergy=True)
            pos = state.getPositions(asNumpy=True)
            positions[i] = pos.value_in_unit(nm)
            forces[i] = state.getForces(asNumpy=True).value_in_unit(kj_nm)
            energies[i] = state.getPotentialEnergy().value_in_unit(kj)
            if dcd_file is not None:
                dcd_file.writeModel(pos)
            bar.update(steps_per_frame)
        ms_per_step = 1e3 * (time.perf_counter() - start) / (n_frames * steps_per_frame)
        protocol["ms_per_step"] = ms_per_step

        data: Dict[str, np.ndarray] = {
            "positions": positions,
            "forces": forces,
            "energies": energies,
            "temperature": np.float64(temperature),
            "time": np.arange(1, n_frames + 1, dtype=np.float64) * steps_per_frame * timestep_fs * 1e-3,
            **molecule.data_entries(pdbfile.topology, start_xyz),
            "protocol": np.array(json.dumps(protocol, sort_keys=True)),
        }
        if not np.all(np.isfinite(energies)):
            raise RuntimeError("the simulation produced non-finite energies (it blew up); nothing written")
        if output is not None:
            with atomic_write(output, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **data)
        if dcd is not None:
            handle.flush()
        # Leaving the ExitStack renames the DCD into place (only when everything above succeeded).
    result = dict(data)
    result["ms_per_step"] = np.float64(ms_per_step)
    return result


def _progress_bar(total: int, enabled: bool):
    from ..progress import progress_bar

    return progress_bar(total=total, unit="step", unit_scale=True, enabled=enabled, file=sys.stderr, leave=False)
