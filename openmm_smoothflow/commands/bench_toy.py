"""``smoothflow bench toy``: the paper's 2-D toy problems, smooth vs spline force fields (Fig. 2;
``benchmarks/toy.py``)."""
from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any, Dict

import torch

from ..benchmarks.toy_models import KINDS, PROBLEMS
from .arguments import non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), help="flows")
    parser.add_argument("--chains", type=positive_int, default=10000, help="MH chains, a square (default: %(default)s)")
    parser.add_argument("--burnin", type=non_negative_int, default=1000, help="MH steps before recording (default: %(default)s)")
    parser.add_argument("--record", type=positive_int, default=10, help="recorded MH steps per chain (default: %(default)s)")
    parser.add_argument("--mh-steps", type=positive_float, nargs="+", default=[0.05, 0.2, 1.0],
                        help="MH proposal widths, one drawn per move (default: %(default)s)")
    parser.add_argument("--iterations", type=positive_int, default=2500, help="Adam steps (paper 8000; default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=512, help="(paper 1000; default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=5e-4, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--components", type=positive_int, default=16,
                        help="spline bins / bump components (paper 40; default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[64, 64],
                        help="conditioner hidden sizes (paper 100 100; default: %(default)s)")
    parser.add_argument("--layers", type=positive_int, default=4, help="coupling layers (default: %(default)s)")
    parser.add_argument("--grid", type=positive_int, default=128, help="metric grid per side (default: %(default)s)")
    parser.add_argument("--quiver", type=positive_int, default=32, help="figure arrows per side (default: %(default)s)")
    parser.add_argument("--support-kt", type=positive_float, default=4.0,
                        help="metric grid: cells with u - min u below this (default: %(default)s)")
    parser.add_argument("--threads", type=non_negative_int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", default="toy.json", help="JSON output (default: %(default)s)")
    parser.add_argument("--figure", default="toy.png", help="PNG output (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..benchmarks.toy import format_table, plot_toy, run_problem
    from ..io import atomic_write

    if args.threads:
        torch.set_num_threads(args.threads)
    n_side = int(round(math.sqrt(args.chains)))
    if n_side * n_side != args.chains:
        raise SystemExit(f"--chains must be a square number, got {args.chains}")
    start = time.perf_counter()
    results: Dict[str, Any] = {}
    panels: Dict[str, Any] = {}
    for problem in args.problems:
        results[problem], panels[problem] = run_problem(
            problem, args.kinds, n_side, args.burnin, args.record, args.mh_steps, args.iterations,
            args.batch_size, args.lr, args.components, tuple(args.hidden), args.layers, args.grid, args.quiver,
            args.support_kt, args.seed, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(f"\n2-D toy problems (Fig. 2 / SI-1): {args.components} bins/components, {args.layers} layers, "
          f"hidden {tuple(args.hidden)}, {args.iterations} steps x batch {args.batch_size}, lr {args.lr:g}; "
          f"{torch.get_num_threads()} threads, {elapsed:.0f} s")
    print(f"NLL in nats on 20k data points; forces in kT per unit length on a {args.grid}^2 grid where "
          f"u - min u <= {args.support_kt:g} kT; roughness = largest neighbour force jump / the reference's")
    print(format_table(results))
    plot_toy(panels, args.figure)
    meta = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "bench")}
    meta.update(threads_used=torch.get_num_threads(), torch=torch.__version__, seconds=elapsed)
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps({"config": meta, "results": results}, indent=1, default=str))
    print(f"wrote {args.out} and {args.figure}")
    return 0
