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
    from ..md.run import run_md

    result = run_md(args.model, args.pdb, args.integrator, args.temperature, args.friction, args.step, args.steps,
                    args.report_every, args.csv, args.dcd, args.platform, args.seed, args.minimize)
    if not result["finite"]:
        print(f"smoothflow md: energy became non-finite at step {result['steps_done']}", file=sys.stderr)
        return 1
    print(f"ran {args.steps} steps of {args.integrator} MD ({args.steps * args.step / 1000:.3f} ps); "
          f"final Epot {result['epot']:.3f} kJ/mol, Etot {result['etot']:.3f} kJ/mol")
    return 0
