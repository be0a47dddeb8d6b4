"""``smoothflow md MODEL [--pdb FILE]``: molecular dynamics with an exported flow as the potential.

Health checks (``md/health.py``) run every ``--check-every`` steps; an unhealthy run stops with exit
code 1 and leaves its last good state in ``--last-good``.pdb/.xml.
"""
from __future__ import annotations

from ..md.health import BOND_FACTOR, TEMPERATURE_FACTOR


def add_arguments(parser) -> None:
    parser.add_argument("model", help="exported flow (.pt) from `smoothflow export`")
    parser.add_argument("--pdb", default=None, help="starting structure: a PDB file or a data file of the molecule "
                        "(default: the molecule and start structure stored in the model)")
    parser.add_argument("--integrator", choices=["langevin", "verlet"], default="langevin",
                        help="langevin (NVT, LangevinMiddle) or verlet (NVE)")
    parser.add_argument("--temperature", type=float, default=None, help="K, > 0 (default: the model's)")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps (Langevin)")
    parser.add_argument("--step", type=float, default=1.0, help="time step in fs")
    parser.add_argument("--steps", type=int, default=10000, help="number of steps (>= 1)")
    parser.add_argument("--report-every", type=int, default=100, help="steps between CSV/DCD reports (>= 1)")
    parser.add_argument("--csv", default=None, help="StateDataReporter CSV file")
    parser.add_argument("--dcd", default=None, help="DCD trajectory file")
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (Reference, CPU, CUDA, ...)")
    parser.add_argument("--backend", choices=["torchforce", "compiled", "aoti"], default="torchforce",
                        help="the flow force: torchforce (openmm-torch, default), compiled, or aoti (fastest on "
                        "CPU; built once per model, minutes, then cached)")
    parser.add_argument("--precision", choices=["single", "double"], default=None,
                        help="the dtype the flow computes in (default: the model file's)")
    parser.add_argument("--seed", type=int, default=0, help="velocity and thermostat seed (0: OpenMM draws a new one every run)")
    parser.add_argument("--minimize", action="store_true", help="minimise the energy before MD")
    health = parser.add_argument_group("health checks (a failed check stops the run with exit code 1)")
    health.add_argument("--check-every", type=int, default=100, help="steps between health checks (default %(default)s)")
    health.add_argument("--max-energy-jump", type=float, default=None, metavar="KJMOL",
                        help="largest Epot change between two checks (default: max(1000, 5 kT per DOF))")
    health.add_argument("--max-temperature", type=float, default=None, metavar="K",
                        help=f"largest instantaneous temperature (default: {TEMPERATURE_FACTOR:g}x the run's)")
    health.add_argument("--bond-factor", type=float, nargs=2, default=list(BOND_FACTOR), metavar=("LOW", "HIGH"),
                        help="allowed bond lengths relative to the start structure (default: %(default)s)")
    health.add_argument("--no-chirality-check", action="store_true", help="do not check sp3 centres for inversion")
    health.add_argument("--last-good", default="smoothflow-md-last-good", metavar="PREFIX",
                        help="on failure, the last good state goes to PREFIX.pdb and PREFIX.xml (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..md.health import HealthLimits
    from ..md.run import run_md

    limits = HealthLimits(max_energy_jump=args.max_energy_jump, max_temperature=args.max_temperature,
                          bond_factor=tuple(args.bond_factor), chirality=not args.no_chirality_check)
    result = run_md(args.model, args.pdb, args.integrator, args.temperature, args.friction, args.step, args.steps,
                    args.report_every, args.csv, args.dcd, args.platform, args.seed, args.minimize,
                    check_every=args.check_every, limits=limits, last_good=args.last_good,
                    progress=not getattr(args, "no_progress", False), backend=args.backend,
                    precision=args.precision)
    print(f"ran {result['steps_done']} steps of {args.integrator} MD ({result['steps_done'] * args.step / 1000:.3f} ps); "
          f"final Epot {result['epot']:.3f} kJ/mol, Etot {result['etot']:.3f} kJ/mol; mean T "
          f"{result['mean_temperature']:.1f} K; {result['checks']} health checks passed"
          + (f", {len(result['warnings'])} warning(s)" if result["warnings"] else ""))
    return 0
