"""``smoothflow bench train``: training throughput and peak memory per loss (``benchmarks/train.py``)."""
import argparse
import json
from pathlib import Path

from ..benchmarks.train import MODES
from ..flows.generator import KINDS
from .arguments import non_negative_int, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batch", type=positive_int, default=128)
    parser.add_argument("--steps", type=positive_int, default=10)
    parser.add_argument("--threads", type=non_negative_int, default=2)
    parser.add_argument("--compile", action="store_true", help="compile the losses (training.compiled.CompiledFlow: force matching through the hand-written gradient pass)")
    parser.add_argument("--kind", default="smooth", choices=list(KINDS))
    parser.add_argument("--data", default=None, help="a data file whose molecule is trained (default: the packaged "
                        "alanine-dipeptide frames)")
    parser.add_argument("--pdb", default=None, help="PDB file of the molecule (overrides --data)")
    parser.add_argument("--out", default="bench-train.json")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)


def run(args) -> int:
    from ..benchmarks.train import default_data, measure, measure_in_subprocess
    from ..io import atomic_write
    from ..md.molecule import load_molecule

    data = args.data if args.data is not None or args.pdb is not None else default_data()
    if args._one:  # child process: one mode, JSON on stdout
        print(json.dumps(measure(args._one, args.batch, args.steps, args.threads, args.compile, args.kind, data, args.pdb)))
        return 0
    molecule = load_molecule(args.pdb, data=data)  # a clear error before any child starts
    print(f"molecule of {molecule.source}: {molecule.n_atoms} atoms")
    results = []
    print(f"{'loss':<10} {'frames/s':>9} {'ms/step':>8} {'peak MB':>8} {'warm-up s':>9}  ({args.kind}, batch {args.batch}, "
          f"{args.threads} threads, compile={args.compile})")
    for mode in args.modes:
        try:
            r = measure_in_subprocess(mode, args.batch, args.steps, args.threads, args.compile, args.kind, data, args.pdb)
        except RuntimeError as exc:
            print(f"{mode:<10} failed: {exc}")
            continue
        results.append(r)
        print(f"{mode:<10} {r['frames_per_s']:>9.0f} {r['ms_per_step']:>8.1f} {r['peak_mb']:>8.0f} {r['warmup_s']:>9.1f}")
    with atomic_write(Path(args.out)) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0
