"""``smoothflow bench inverse``: analytic vs root-finding inversion of a neural spline (Table SI-1,
``benchmarks/inverse.py``)."""
import argparse
import json
import platform

import torch

from ..benchmarks.inverse import BINS, DIMS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dims", type=int, nargs="+", default=DIMS, help="tensor dims (default: %(default)s)")
    parser.add_argument("--bins", type=int, nargs="+", default=BINS, help="bisection bins K (default: 2..256)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size B (default: %(default)s)")
    parser.add_argument("--spline-bins", type=int, default=8, help="spline bins (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=64, help="conditioner hidden units (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default: %(default)s)")
    parser.add_argument("--min-time", type=float, default=0.02,
                        help="minimal seconds per repeat; sets the calls per repeat (default: %(default)s)")
    parser.add_argument("--tol", type=float, default=1e-6, help="bisection residual |f(x)-y| (default: %(default)s)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-inverse.json", help="JSON output (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.inverse import format_table, table_si1
    from ..io import atomic_write

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    rows, results = table_si1(args.dims, args.bins, args.batch_size, args.spline_bins, args.hidden, args.repeats,
                              args.min_time, args.tol, dtype, args.seed, progress=not args.no_progress)
    print(f"\nTable SI-1 on {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, {args.dtype}, tol {args.tol:g}, spline bins {args.spline_bins}")
    print(format_table(rows))
    meta = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "bench")}
    meta.update(threads_used=torch.get_num_threads(), torch=torch.__version__, machine=platform.machine())
    payload = {"config": meta, "table": rows, "timings": {str(d): r for d, r in results.items()}}
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0
