"""``smoothflow bench speed``: ms per MD step, flow vs classical (``benchmarks/speed.py``)."""
import argparse
import json
from .arguments import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=positive_int, default=200, help="MD steps per timed repeat (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repeats per row (default: %(default)s)")
    parser.add_argument("--warmup", type=non_negative_int, default=20, help="untimed MD steps first (default: %(default)s)")
    parser.add_argument("--platforms", nargs="+", default=["Reference", "CPU"],
                        help="OpenMM platforms for the classical and TorchForce rows (default: %(default)s)")
    parser.add_argument("--threads", type=non_negative_int, default=1,
                        help="torch threads and OpenMM CPU-platform threads (default: %(default)s)")
    parser.add_argument("--skip-compiled", action="store_true", help="leave out the torch.compile backend")
    parser.add_argument("--skip-aoti", action="store_true",
                        help="leave out the aoti backend (its first build per model takes minutes; cached after)")
    parser.add_argument("--model", default=None, help="an exported flow: its molecule is used and the model is timed too")
    parser.add_argument("--pdb", default=None, help="PDB file of the molecule (default: the --model's, else the "
                        "packaged alanine dipeptide)")
    parser.add_argument("--out", default="bench-speed.json", help="JSON output (default: %(default)s)")


# ---- measurements ----------------------------------------------------------------------------------


def run(args) -> int:
    from ..benchmarks.speed import speed_benchmark
    from ..io import atomic_write

    result = speed_benchmark(args.steps, args.repeats, args.warmup, args.platforms, args.threads, args.skip_compiled,
                             getattr(args, "skip_aoti", False), model=getattr(args, "model", None),
                             pdb=getattr(args, "pdb", None))
    with atomic_write(args.out) as tmp_path:
        tmp_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0
