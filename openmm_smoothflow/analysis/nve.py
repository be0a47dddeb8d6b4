"""Energy conservation in NVE (paper Fig. 4, SI-2.7), behind ``smoothflow bench nve`` and ``smoothflow demo``.

Per potential and per starting frame: Langevin equilibration (300 K, friction 10/ps, 1 fs), then
velocity Verlet at 1 fs without thermostat. Reported per potential: the standard deviation of the
total energy per degree of freedom (kJ/mol; DOF = 3N - 6), the drift (kJ/mol/ps, slope of a linear fit,
per DOF too), the largest total-energy change between two reports, and how many runs blew up
(non-finite energy, an OpenMM error while stepping, or a total-energy excursion past ``blowup_kjmol``).
A blown-up run is recorded, never a crash of the command (while bad input, such as frames of another
molecule, is an error), and reported on the console; so is a run whose final
bonds or stereocentres are broken (``health``, from ``md/health.py``; not counted as a blow-up).
``nve.json`` keeps every run's figures.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..io import atomic_write


def nve_run(system, topology, positions: np.ndarray, platform: str = "Reference", temperature: float = 300.0,
            equil_steps: int = 1000, nve_steps: int = 5000, dt_fs: float = 1.0, friction: float = 10.0,
            report_every: int = 10, seed: int = 0, blowup_kjmol: float = 1.0e4) -> Dict[str, Any]:
    """One run from ``positions`` (N, 3) nm; returns the total-energy trace (kJ/mol) and diagnostics."""
    import openmm
    from openmm import unit

    from ..md.systems import get_platform

    n_atoms = system.getNumParticles()
    if np.shape(positions) != (n_atoms, 3):  # a wrong input is an error, never a "blown-up" run
        raise ValueError(f"starting positions have shape {np.shape(positions)}, the system has {n_atoms} "
                         "particles: the frames are of another molecule")
    dt = dt_fs * unit.femtoseconds
    integrator = openmm.CompoundIntegrator()
    langevin = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond, dt)
    langevin.setRandomNumberSeed(seed + 1)
    integrator.addIntegrator(langevin)
    integrator.addIntegrator(openmm.VerletIntegrator(dt))
    context = openmm.Context(system, integrator, get_platform(platform))
    n_reports = nve_steps // report_every + 1
    trace = np.full(n_reports, np.nan)
    result: Dict[str, Any] = {"blown_up": False, "error": None}
    start = time.perf_counter()
    context.setPositions(positions)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    try:
        integrator.setCurrentIntegrator(0)
        integrator.step(equil_steps)
        integrator.setCurrentIntegrator(1)
        for i in range(n_reports):
            if i:
                integrator.step(report_every)
            state = context.getState(getEnergy=True)
            total = (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
            trace[i] = total
            if not np.isfinite(total) or abs(total - trace[0]) > blowup_kjmol:
                result.update(blown_up=True, error=f"total energy {total:.4g} kJ/mol at NVE step {i * report_every}")
                break
        result["health"] = _final_health(context, topology, positions)
    except (openmm.OpenMMException, ArithmeticError) as exc:  # NaN coordinates, a model's NaN check: blown up
        result.update(blown_up=True, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        del context
    n_dof = 3 * system.getNumParticles() - 6
    finite = trace[np.isfinite(trace)]
    t_ps = np.arange(len(trace)) * report_every * dt_fs / 1000.0
    result.update(trace=trace, seconds=time.perf_counter() - start, n_dof=n_dof)
    if len(finite) > 1:  # the largest change of E_tot between two reports: single-step jumps show here
        result["max_jump"] = float(np.abs(np.diff(finite)).max())
    if not result["blown_up"] and len(finite) > 2:
        result["std_per_dof"] = float(np.std(finite) / n_dof)
        result["drift_per_dof"] = float(np.polyfit(t_ps, trace, 1)[0] / n_dof)
    return result


def _final_health(context, topology, positions: np.ndarray):
    """Bonds and stereocentres of the final state against the start (``md.health``); None if intact.
    Reported next to the energy figures; it does not change what counts as a blow-up."""
    from openmm import unit

    from ..md.health import HealthLimits, HealthMonitor

    if topology is None:
        return None
    final = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    monitor = HealthMonitor(topology, np.asarray(positions), 300.0, 1,
                            HealthLimits(max_energy_jump=float("inf"), max_temperature=float("inf")))
    return monitor.check(0, final, 0.0, 0.0)


PER_RUN = ("blown_up", "error", "health", "std_per_dof", "drift_per_dof", "max_jump", "seconds")


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per potential: runs, blow-ups, mean / median / max of the per-run std of E_tot per DOF (kJ/mol),
    mean and largest |drift| per DOF (kJ/mol/ps), the largest E_tot change between two reports
    (``max_jump``, kJ/mol, over all runs), and every run's figures (``per_run``)."""
    ok = [r for r in runs if not r["blown_up"]]
    summary: Dict[str, Any] = {"runs": len(runs), "blown_up": len(runs) - len(ok),
                               "seconds": float(sum(r["seconds"] for r in runs))}
    if ok:
        stds = np.array([r["std_per_dof"] for r in ok])
        drifts = np.array([r["drift_per_dof"] for r in ok])
        summary.update(std_per_dof_mean=float(stds.mean()), std_per_dof_median=float(np.median(stds)),
                       std_per_dof_max=float(stds.max()), drift_per_dof_mean=float(drifts.mean()),
                       drift_per_dof_absmax=float(np.abs(drifts).max()),
                       max_jump=float(max(r["max_jump"] for r in ok)))
    summary["per_run"] = [{k: r[k] for k in PER_RUN if k in r} for r in runs]
    errors = [r["error"] for r in runs if r["error"]]
    if errors:
        summary["first_error"] = errors[0]
    return summary


def compare(potentials: Dict[str, Any], topology, frames: np.ndarray, out_dir: Optional[Path] = None,
            progress: bool = True, **kwargs) -> Dict[str, Any]:
    """Run every potential (name -> openmm.System) from every frame (n, N, 3) nm in the same process.

    Writes ``nve.json`` and ``nve.png`` to ``out_dir`` when given; returns the summary per potential.
    """
    from ..progress import progress_bar

    from . import plots

    traces: Dict[str, np.ndarray] = {}
    summary: Dict[str, Any] = {}
    bar = progress_bar(total=len(potentials) * len(frames), desc="NVE runs", unit="run", enabled=progress)
    for name, system in potentials.items():
        runs = []
        for i, frame in enumerate(frames):
            runs.append(nve_run(system, topology, frame, seed=i, **kwargs))
            if runs[-1]["blown_up"] or runs[-1].get("health"):  # reported, never hidden in the JSON
                bar.write(f"NVE {name}, frame {i}: " + ("blew up: " + runs[-1]["error"] if runs[-1]["blown_up"]
                                                        else "bonds or chirality broken: " + runs[-1]["health"]))
            bar.update(1)
            bar.set_postfix(potential=name)
        traces[name] = np.stack([r["trace"] for r in runs])
        summary[name] = summarize(runs)
    bar.close()
    if out_dir is not None:
        out_dir = Path(out_dir)
        protocol = {k: v for k, v in kwargs.items()}
        with atomic_write(out_dir / "nve.json") as tmp:
            tmp.write_text(json.dumps({"summary": summary, "protocol": protocol, "frames": len(frames)}, indent=2))
        dt_ps = kwargs.get("report_every", 10) * kwargs.get("dt_fs", 1.0) / 1000.0
        plots.energy_traces(traces, out_dir / "nve.png", dt_ps=dt_ps)
    return summary


def format_table(summary: Dict[str, Any]) -> str:
    """Over the runs that did not blow up: mean and median std of E_tot per DOF, mean drift per DOF and
    the largest E_tot change between two reports."""
    rows = [f"{'potential':<12} {'runs':>4} {'blown':>5} {'std/DOF kJ/mol':>15} {'median':>9} "
            f"{'drift/DOF kJ/mol/ps':>20} {'max jump kJ/mol':>16}"]
    for name, s in summary.items():
        def cell(key: str, fmt: str) -> str:
            return format(s[key], fmt) if key in s else "-"
        rows.append(f"{name:<12} {s['runs']:>4} {s['blown_up']:>5} {cell('std_per_dof_mean', '.2e'):>15} "
                    f"{cell('std_per_dof_median', '.2e'):>9} {cell('drift_per_dof_mean', '+.2e'):>20} "
                    f"{cell('max_jump', '.3g'):>16}")
    return "\n".join(rows)
