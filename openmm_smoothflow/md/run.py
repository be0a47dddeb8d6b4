"""Molecular dynamics with an exported flow as the potential (behind ``smoothflow md``)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..units import PathLike


def run_md(model: PathLike, pdb: Optional[PathLike] = None, integrator: str = "langevin",
           temperature: Optional[float] = None, friction: float = 1.0, step_fs: float = 1.0, steps: int = 10000,
           report_every: int = 100, csv: Optional[PathLike] = None, dcd: Optional[PathLike] = None,
           platform: str = "Reference", seed: int = 0, minimize: bool = False) -> Dict[str, Any]:
    """Run ``steps`` MD steps of the exported flow ``model`` from ``pdb`` (default: packaged alanine dipeptide).

    ``integrator``: "langevin" (NVT, LangevinMiddle; ``temperature`` K, default the model's, ``friction``
    1/ps) or "verlet" (NVE); time step ``step_fs`` fs. Every ``report_every`` steps the energies are
    checked (and written to ``csv``/``dcd`` reporters when given), with a progress bar. Returns
    ``steps_done``, the final ``epot``/``etot`` in kJ/mol and ``finite`` (False: stopped at a non-finite
    energy).
    """
    import openmm
    from openmm import app, unit
    from tqdm import tqdm

    from ..potential import FlowPotential
    from .systems import alanine_dipeptide_pdb, get_platform, load_pdb

    potential = FlowPotential(model)
    pdbfile = load_pdb(pdb or alanine_dipeptide_pdb())
    system = potential.createSystem(pdbfile.topology)
    temperature = (temperature or potential.temperature) * unit.kelvin
    dt = step_fs * unit.femtoseconds
    if integrator == "langevin":
        openmm_integrator = openmm.LangevinMiddleIntegrator(temperature, friction / unit.picosecond, dt)
        openmm_integrator.setRandomNumberSeed(seed)
    elif integrator == "verlet":
        openmm_integrator = openmm.VerletIntegrator(dt)
    else:
        raise ValueError(f"integrator must be 'langevin' or 'verlet', not {integrator!r}")
    simulation = app.Simulation(pdbfile.topology, system, openmm_integrator, get_platform(platform))
    simulation.context.setPositions(pdbfile.positions)
    if minimize:
        simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(temperature, seed)
    if csv:
        simulation.reporters.append(app.StateDataReporter(
            str(csv), report_every, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
            totalEnergy=True, temperature=True, speed=True))
    if dcd:
        simulation.reporters.append(app.DCDReporter(str(dcd), report_every))
    with tqdm(total=steps, unit="step", desc=f"{integrator} MD") as bar:
        done = 0
        while done < steps:
            chunk = min(report_every, steps - done)
            simulation.step(chunk)
            done += chunk
            state = simulation.context.getState(getEnergy=True)
            epot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            ekin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            bar.update(chunk)
            bar.set_postfix(Epot=f"{epot:.2f}", Etot=f"{epot + ekin:.2f}")
            if epot != epot or abs(epot) == float("inf"):
                return {"steps_done": done, "epot": epot, "etot": epot + ekin, "finite": False}
    return {"steps_done": done, "epot": epot, "etot": epot + ekin, "finite": True}
