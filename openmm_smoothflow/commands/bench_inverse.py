"""``smoothflow bench inverse``: analytic vs root-finding inversion of a neural spline (Table SI-1), the
bump mixture's root-finding inverse vs the spline's analytic one, and flow sampling throughput
(``benchmarks/inverse.py``; ``--tables`` picks)."""
import argparse
import json
import platform

import torch

from ..benchmarks.inverse import BINS, DIMS

TABLES = ("si1", "bump", "sample")
from .arguments import non_negative_float, non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dims", type=positive_int, nargs="+", default=DIMS, help="tensor dims (default: %(default)s)")
    parser.add_argument("--bins", type=positive_int, nargs="+", default=BINS, help="bisection bins K (default: 2..256)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="batch size B (default: %(default)s)")
    parser.add_argument("--spline-bins", type=positive_int, default=8, help="spline bins (default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, default=64, help="conditioner hidden units (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats (default: %(default)s)")
    parser.add_argument("--min-time", type=non_negative_float, default=0.02,
                        help="minimal seconds per repeat; sets the calls per repeat (default: %(default)s)")
    parser.add_argument("--tol", type=positive_float, default=1e-6, help="bisection residual |f(x)-y| (default: %(default)s)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=non_negative_int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", default="bench-inverse.json", help="JSON output (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES),
                        help="si1: Table SI-1; bump: bump-mixture vs spline inverse at (batch, dim) "
                             "1x2 .. 64x512; sample: samples/s of the paper-size flows (default: all)")


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.inverse import (bump_rows, format_bump_table, format_sampling_table, format_table,
                                      sampling_rows, table_si1)
    from ..io import atomic_write

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    tables = getattr(args, "tables", None) or list(TABLES)
    rows, results, bump, sampling = [], {}, [], []
    if "si1" in tables:
        rows, results = table_si1(args.dims, args.bins, args.batch_size, args.spline_bins, args.hidden,
                                  args.repeats, args.min_time, args.tol, dtype, args.seed,
                                  progress=not args.no_progress)
        print(f"\nTable SI-1 on {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
              f"batch {args.batch_size}, {args.dtype}, tol {args.tol:g}, spline bins {args.spline_bins}")
        print(format_table(rows))
    if "bump" in tables:
        bump = bump_rows(repeats=args.repeats, min_time=args.min_time, dtype=dtype, seed=args.seed)
        print(f"\nbump mixture (8 bumps, root finding) vs rational-quadratic spline (8 bins, analytic) inverse, "
              f"ms per call, params given, no_grad, {args.dtype}, {torch.get_num_threads()} threads:")
        print(format_bump_table(bump))
    if "sample" in tables:
        sampling = sampling_rows(seed=args.seed)
        print(f"\nsampling the paper-size alanine-dipeptide flows (random weights, float32, no_grad, "
              f"{torch.get_num_threads()} threads):")
        print(format_sampling_table(sampling))
    meta = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "bench")}
    meta.update(threads_used=torch.get_num_threads(), torch=torch.__version__, machine=platform.machine())
    payload = {"config": meta, "table": rows, "timings": {str(d): r for d, r in results.items()},
               "bump_vs_spline": bump, "sampling": sampling}
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0
