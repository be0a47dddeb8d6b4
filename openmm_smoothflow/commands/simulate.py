"""``smoothflow simulate -o data.npz``: classical OpenMM MD that writes training data (see ``md/sampling.py``)."""
from __future__ import annotations

import argparse
import sys

from ..md.sampling import DEFAULTS, simulate
from .arguments import non_negative_float, non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    parser.add_argument("-o", "--output", required=True, help="output .npz file")
    parser.add_argument("--pdb", default=None, help="PDB file of the molecule, stored in the data for every later command "
                        "(without it: the packaged alanine dipeptide, with a warning)")
    parser.add_argument("-n", "--frames", type=positive_int, default=1000, help="number of frames (default 1000)")
    parser.add_argument("--steps-per-frame", type=positive_int, default=d["steps_per_frame"],
                        help="MD steps between frames (default %(default)s = 1 ps)")
    parser.add_argument("--equilibration-steps", type=non_negative_int, default=d["equilibration_steps"],
                        help="steps before the first frame (default %(default)s = 100 ps)")
    parser.add_argument("--temperature", type=positive_float, default=d["temperature"], help="K (default %(default)s)")
    parser.add_argument("--friction", type=non_negative_float, default=d["friction"], help="1/ps (default %(default)s)")
    parser.add_argument("--timestep", type=positive_float, default=d["timestep_fs"], help="fs (default %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=d["seed"],
                        help="seed of velocities and Langevin noise (default %(default)s; -1: random)")
    parser.add_argument("--platform", default=d["platform"], help="OpenMM platform (default %(default)s)")
    parser.add_argument("--forcefield", nargs="+", default=list(d["forcefield"]),
                        help="force-field XML files (default: %(default)s)")
    parser.add_argument("--constraints", default="none", choices=["none", "HBonds", "AllBonds", "HAngles"],
                        help="default: none")
    parser.add_argument("--no-minimize", dest="minimize", action="store_false", help="skip energy minimisation")
    parser.add_argument("--dcd", default=None, help="also write the frames as a DCD trajectory")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..md.systems import get_platform

    try:
        get_platform(args.platform)
    except ValueError as exc:
        print(f"smoothflow simulate: {exc}", file=sys.stderr)
        return 2
    result = simulate(
        args.pdb,
        args.frames,
        output=args.output,
        dcd=args.dcd,
        steps_per_frame=args.steps_per_frame,
        equilibration_steps=args.equilibration_steps,
        temperature=args.temperature,
        friction=args.friction,
        timestep_fs=args.timestep,
        seed=None if args.seed is not None and args.seed < 0 else args.seed,
        platform=args.platform,
        forcefield=args.forcefield,
        constraints=None if args.constraints == "none" else args.constraints,
        minimize=args.minimize,
        progress=args.progress,
    )
    n = len(result["energies"])
    print(
        f"wrote {n} frames of {result['positions'].shape[1]} atoms to {args.output}"
        + (f" and {args.dcd}" if args.dcd else "")
        + f"; {float(result['ms_per_step']):.4f} ms per MD step ({args.platform}),"
        f" mean potential energy {result['energies'].mean():.2f} kJ/mol"
    )
    return 0
