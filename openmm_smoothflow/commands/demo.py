"""``smoothflow demo``: the shipped alanine-dipeptide smooth flow driving OpenMM, next to the classical
force field, in a few minutes on a laptop CPU.

1. Loads the packaged exported model and builds an OpenMM System with the flow as a TorchForce.
2. From a few packaged MD frames: Langevin equilibration, then NVE (velocity Verlet), for the flow and
   for amber99sbildn + OBC in the same run; prints energy conservation (std/DOF, drift).
3. A short Langevin run with the flow; phi/psi of its frames against the packaged MD frames.
Writes ``nve.png``, ``ramachandran.png`` and ``demo.json`` to ``--out``.
"""
import json
import time
from pathlib import Path

import numpy as np

from ..io import packaged
from .arguments import non_negative_int, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None, help="exported flow (default: the shipped smooth flow)")
    parser.add_argument("--frames", type=positive_int, default=3, help="starting frames for NVE")
    parser.add_argument("--equil-steps", type=non_negative_int, default=500, help="Langevin steps before NVE (1 fs)")
    parser.add_argument("--nve-steps", type=positive_int, default=2000, help="NVE steps (1 fs)")
    parser.add_argument("--langevin-steps", type=positive_int, default=3000, help="steps of the flow Langevin run")
    parser.add_argument("--platform", default="Reference")
    parser.add_argument("--out", default="smoothflow-demo", help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    import openmm
    import torch
    from openmm import unit
    from ..analysis import plots
    from ..analysis.nve import compare, format_table
    from ..analysis.phi_psi import phi_psi
    from ..md.systems import alanine_dipeptide_pdb, classical_system, get_platform, load_pdb
    from ..potential import FlowPotential
    from ..progress import progress_bar

    torch.set_num_threads(1)  # batch-1 energies: a second thread only adds overhead
    start = time.perf_counter()
    out = Path(args.out)
    model = Path(args.model) if args.model else packaged("ala2-smooth.pt")
    potential = FlowPotential(model)
    meta = potential.metadata
    print(f"model {model.name}: {meta['kind']} flow, {meta['n_parameters']:,} parameters, "
          f"{meta['temperature']} K, trained on {meta['provenance'].get('frames', '?')} frames")
    pdb = load_pdb(alanine_dipeptide_pdb())
    with np.load(packaged("ala2-frames.npz")) as npz:
        frames = npz["positions"].astype(np.float64)
    systems = {"classical": classical_system(pdb.topology), meta["kind"] + " flow": potential.createSystem(pdb.topology)}
    print(f"NVE: {args.frames} frames x ({args.equil_steps} Langevin + {args.nve_steps} Verlet steps of 1 fs)")
    summary = compare(systems, pdb.topology, frames[: args.frames], out, equil_steps=args.equil_steps,
                      nve_steps=args.nve_steps, platform=args.platform, progress=not args.no_progress)
    print(format_table(summary))

    # a short Langevin run with the flow: does it stay in the MD ensemble?
    integrator = openmm.LangevinMiddleIntegrator(potential.temperature * unit.kelvin, 1 / unit.picosecond,
                                                 1 * unit.femtosecond)
    context = openmm.Context(systems[meta["kind"] + " flow"], integrator, get_platform(args.platform))
    context.setPositions(frames[0])
    context.setVelocitiesToTemperature(potential.temperature * unit.kelvin, 1)
    traj = []
    from ..md.health import HealthMonitor, MDHealthError, kinetic_dof

    monitor = HealthMonitor(pdb.topology, frames[0], potential.temperature,
                            kinetic_dof(systems[meta["kind"] + " flow"]))
    for i in progress_bar(range(max(args.langevin_steps // 20, 1)), desc="flow Langevin", unit="x20 steps",
                          enabled=not args.no_progress):
        integrator.step(20)
        state = context.getState(getPositions=True, getEnergy=True)
        traj.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        problem = monitor.check(20 * (i + 1), traj[-1], state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                                state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole))
        if problem is not None:  # md/health.py: a blown-up or broken molecule is no demo result
            raise MDHealthError(f"flow Langevin MD unhealthy at step {20 * (i + 1)}: {problem}")
    plots.ramachandran({"MD frames (packaged)": phi_psi(frames, pdb.topology),
                        "flow Langevin MD": phi_psi(np.array(traj), pdb.topology)}, out / "ramachandran.png")
    result = {"model": str(model), "nve": summary, "langevin_frames": len(traj),
              "seconds": round(time.perf_counter() - start, 1)}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out}/nve.png, {out}/ramachandran.png, {out}/demo.json in {result['seconds']} s")
    return 0
