"""``smoothflow md MODEL --pdb FILE``: molecular dynamics with an exported flow as the potential."""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("model", help="exported flow (.pt) from `smoothflow export`")
    parser.add_argument("--pdb", default=None, help="starting structure (default: packaged alanine dipeptide)")
    parser.add_argument("--integrator", choices=["langevin", "verlet"], default="langevin",
                        help="langevin (NVT, LangevinMiddle) or verlet (NVE)")
    parser.add_argument("--temperature", type=float, default=None, help="K (default: the model's)")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps (Langevin)")
    parser.add_argument("--step", type=float, default=1.0, help="time step in fs")
    parser.add_argument("--steps", type=int, default=10000, help="number of steps")
    parser.add_argument("--report-every", type=int, default=100, help="steps between reports")
    parser.add_argument("--csv", default=None, help="StateDataReporter CSV file")
    parser.add_argument("--dcd", default=None, help="DCD trajectory file")
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (Reference, CPU, CUDA, ...)")
    parser.add_argument("--seed", type=int, default=0, help="velocity and thermostat seed")
    parser.add_argument("--minimize", action="store_true", help="minimise the energy before MD")


def run(args) -> int:
    import openmm
    from openmm import app, unit
    from tqdm import tqdm

    from ..potential import FlowPotential
    from .systems import alanine_dipeptide_pdb, get_platform, load_pdb

    potential = FlowPotential(args.model)
    pdb = load_pdb(args.pdb or alanine_dipeptide_pdb())
    system = potential.createSystem(pdb.topology)
    temperature = (args.temperature or potential.temperature) * unit.kelvin
    dt = args.step * unit.femtoseconds
    if args.integrator == "langevin":
        integrator = openmm.LangevinMiddleIntegrator(temperature, args.friction / unit.picosecond, dt)
        integrator.setRandomNumberSeed(args.seed)
    else:
        integrator = openmm.VerletIntegrator(dt)
    simulation = app.Simulation(pdb.topology, system, integrator, get_platform(args.platform))
    simulation.context.setPositions(pdb.positions)
    if args.minimize:
        simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(temperature, args.seed)
    if args.csv:
        simulation.reporters.append(app.StateDataReporter(
            args.csv, args.report_every, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
            totalEnergy=True, temperature=True, speed=True))
    if args.dcd:
        simulation.reporters.append(app.DCDReporter(args.dcd, args.report_every))
    with tqdm(total=args.steps, unit="step", desc=f"{args.integrator} MD") as bar:
        done = 0
        while done < args.steps:
            chunk = min(args.report_every, args.steps - done)
            simulation.step(chunk)
            done += chunk
            state = simulation.context.getState(getEnergy=True)
            epot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            ekin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            bar.update(chunk)
            bar.set_postfix(Epot=f"{epot:.2f}", Etot=f"{epot + ekin:.2f}")
            if epot != epot or abs(epot) == float("inf"):
                print(f"smoothflow md: energy became non-finite at step {done}", file=sys.stderr)
                return 1
    print(f"ran {args.steps} steps of {args.integrator} MD ({args.steps * args.step / 1000:.3f} ps); "
          f"final Epot {epot:.3f} kJ/mol, Etot {epot + ekin:.3f} kJ/mol")
    return 0
