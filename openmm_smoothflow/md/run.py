"""Molecular dynamics with an exported flow as the potential (behind ``smoothflow md``), with health checks."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import SmoothflowWarning, UsageError
from ..units import PathLike
from .health import HealthLimits, HealthMonitor, MDHealthError, kinetic_dof

INTEGRATORS = ("langevin", "verlet")


def validate_md_arguments(integrator: str, temperature: Optional[float], friction: float, step_fs: float,
                          steps: int, report_every: int, check_every: int,
                          limits: Optional[HealthLimits] = None) -> None:
    """UsageError naming the first invalid argument of :func:`run_md`."""
    if integrator not in INTEGRATORS:
        raise UsageError(f"integrator must be one of {', '.join(INTEGRATORS)}, not {integrator!r}")
    if temperature is not None and not temperature > 0:
        raise UsageError(f"temperature must be > 0 K, got {temperature}")
    if not friction >= 0:
        raise UsageError(f"friction must be >= 0 1/ps, got {friction}")
    if not step_fs > 0:
        raise UsageError(f"time step must be > 0 fs, got {step_fs}")
    for name, value in (("steps", steps), ("report_every", report_every), ("check_every", check_every)):
        if int(value) != value or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value}")
    if limits is not None:
        lo, hi = limits.bond_factor
        if not 0 < lo < 1 < hi:
            raise UsageError(f"bond_factor must be (low, high) with 0 < low < 1 < high, got {limits.bond_factor}")
        for name in ("max_energy_jump", "max_temperature"):
            value = getattr(limits, name)
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be > 0, got {value}")


def write_state(prefix: PathLike, topology, state) -> List[str]:
    """``prefix.pdb`` (positions) and ``prefix.xml`` (OpenMM State: positions, velocities, step,
    time; ``Simulation.loadState`` / ``Context.setState`` read it). Returns the paths written."""
    import openmm
    from openmm import app

    from ..io import atomic_write

    prefix = Path(prefix)
    pdb, xml = prefix.with_name(prefix.name + ".pdb"), prefix.with_name(prefix.name + ".xml")
    with atomic_write(pdb) as tmp, open(tmp, "w") as fh:
        app.PDBFile.writeFile(topology, state.getPositions(), fh)
    with atomic_write(xml) as tmp:
        tmp.write_text(openmm.XmlSerializer.serialize(state))
    return [str(pdb), str(xml)]


def run_md(model: PathLike, pdb: Optional[PathLike] = None, integrator: str = "langevin",
           temperature: Optional[float] = None, friction: float = 1.0, step_fs: float = 1.0, steps: int = 10000,
           report_every: int = 100, csv: Optional[PathLike] = None, dcd: Optional[PathLike] = None,
           platform: str = "Reference", seed: int = 0, minimize: bool = False, check_every: int = 100,
           limits: Optional[HealthLimits] = None, last_good: Optional[PathLike] = None,
           progress: bool = True, backend: str = "torchforce", precision: Optional[str] = None) -> Dict[str, Any]:
    """Run ``steps`` MD steps of the exported flow ``model`` from ``pdb`` (a PDB file or a data file that
    carries its molecule; default: the molecule and start structure stored in the model, :mod:`.molecule`).

    ``integrator``: "langevin" (NVT, LangevinMiddle; ``temperature`` K, default the model's, ``friction``
    1/ps) or "verlet" (NVE, velocities drawn at ``temperature``); time step ``step_fs`` fs. ``csv``/``dcd``
    reporters write every ``report_every`` steps. Every ``check_every`` steps the state goes through the
    health checks of :mod:`.health` (bounds ``limits``): on a failed check (or an OpenMM error) the last
    good state is written to ``last_good``.pdb/.xml (when given) and :class:`MDHealthError` is raised.
    ``backend``/``precision``: the flow force's (:meth:`FlowPotential.createForce`; "aoti" the fastest
    on CPU, built once per model and cached).
    Warnings (support, temperature) go through ``warnings.warn`` (:class:`SmoothflowWarning`).

    Returns ``steps_done``, the final ``epot``/``etot`` kJ/mol, ``finite`` (True), ``checks``,
    ``outside_frames`` (checked frames outside the model's support), ``mean_temperature`` K and
    ``warnings`` (their texts).
    """
    validate_md_arguments(integrator, temperature, friction, step_fs, steps, report_every, check_every, limits)
    import numpy as np
    import openmm
    import torch
    from openmm import app, unit
    from ..progress import progress_bar

    from ..potential import FlowPotential
    from .molecule import from_metadata, load_molecule
    from .systems import get_platform

    potential = FlowPotential(model)
    pdbfile = load_molecule(pdb) if pdb is not None else from_metadata(potential.metadata, str(model))
    pdbfile.start_structure()  # ValueError naming the file when it has none
    system = potential.createSystem(pdbfile.topology, backend=backend, precision=precision)
    temperature_k = potential.temperature if temperature is None else float(temperature)
    dt = step_fs * unit.femtoseconds
    if integrator == "langevin":
        openmm_integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, friction / unit.picosecond, dt)
        openmm_integrator.setRandomNumberSeed(seed)
    else:
        openmm_integrator = openmm.VerletIntegrator(dt)
    simulation = app.Simulation(pdbfile.topology, system, openmm_integrator, get_platform(platform))
    simulation.context.setPositions(pdbfile.positions)
    if minimize:
        simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)

    said: List[str] = []

    def warn(text: str) -> None:
        said.append(text)
        warnings.warn(text, SmoothflowWarning, stacklevel=3)

    generator = potential.generator()

    def outside(x: np.ndarray) -> bool:
        return generator.count_outside(torch.as_tensor(x, dtype=torch.float64)[None]) > 0

    def snapshot():
        return simulation.context.getState(getPositions=True, getVelocities=True, getEnergy=True)

    nm, kjmol = unit.nanometer, unit.kilojoule_per_mole
    good = snapshot()
    monitor = HealthMonitor(pdbfile.topology, good.getPositions(asNumpy=True).value_in_unit(nm), temperature_k,
                            kinetic_dof(system), limits, outside, potential.temperature, warn)
    first = monitor.check(0, good.getPositions(asNumpy=True).value_in_unit(nm),
                          good.getPotentialEnergy().value_in_unit(kjmol), good.getKineticEnergy().value_in_unit(kjmol))
    if first is not None:
        raise MDHealthError(f"the start structure fails the health checks: {first}", 0, first, -1)
    if csv:
        simulation.reporters.append(app.StateDataReporter(
            str(csv), report_every, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
            totalEnergy=True, temperature=True, speed=True))
    if dcd:
        simulation.reporters.append(app.DCDReporter(str(dcd), report_every))

    def fail(step: int, reason: str):
        files = write_state(last_good, pdbfile.topology, good) if last_good else []
        good_step = int(round(good.getStepCount()))
        where = f"; last good state (step {good_step}): {', '.join(files)}" if files else ""
        raise MDHealthError(f"MD unhealthy at step {step}: {reason}{where}", step, reason, good_step, files)

    done = 0
    with progress_bar(total=steps, unit="step", desc=f"{integrator} MD", enabled=progress) as bar:
        while done < steps:
            chunk = min(check_every, steps - done)
            try:
                simulation.step(chunk)
                state = snapshot()
            except Exception as exc:  # OpenMM raises on NaN coordinates, the model on NaN positions
                fail(done + chunk, f"OpenMM error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
            done += chunk
            epot = state.getPotentialEnergy().value_in_unit(kjmol)
            ekin = state.getKineticEnergy().value_in_unit(kjmol)
            problem = monitor.check(done, state.getPositions(asNumpy=True).value_in_unit(nm), epot, ekin)
            if problem is not None:
                fail(done, problem)
            good = state
            bar.update(chunk)
            bar.set_postfix(Epot=f"{epot:.2f}", Etot=f"{epot + ekin:.2f}")
    for text in monitor.summary_warnings():
        warn(text)
    mean_t = float(np.mean(monitor.temperatures)) if monitor.temperatures else float("nan")
    return {"steps_done": done, "epot": epot, "etot": epot + ekin, "finite": True, "checks": monitor.checks,
            "outside_frames": monitor.outside_frames, "mean_temperature": mean_t, "warnings": said}
