"""``smoothflow bench inverse``: analytic vs root-finding inversion of a neural spline (Table SI-1).

For each dim, a conditioner MLP (input size dim, one hidden layer of 64 units, SiLU) maps a random
conditioning input (B, dim) to rational-quadratic spline params (B, dim, 3 n_bins + 1). The spline is
inverted at random y (B, dim) either analytically (``RationalQuadraticSpline.inverse``) or by
multi-bin bisection with K = 2^m bins, m = 1..8 (``rootfind_inverse``: the same spline's analytic
forward, implicit gradients). Timed per call:

* "inversion": conditioner + inverse under ``torch.no_grad()``;
* "inversion + backprop": conditioner + inverse + backward of ``sum(x) + sum(log|dx/dy|)`` into the
  conditioner's weights.

Each of ``--repeats`` repeats times ``n`` consecutive calls (``n`` calibrated so a repeat lasts at least
``--min-time`` s); mean +- std over repeats of the per-call time in ms. The best K per dim is the fastest.

Default batch size 64 (float32, torch threads): the full table (6 dims x (1 + 8) methods x 2 modes x 5
repeats) takes a few minutes on 2 CPU cores; larger batches mostly scale the large-dim rows linearly.
"""
import argparse
import json
import math
import platform
import time
from typing import Callable, Dict, List

import torch
from torch import nn

DIMS = [2, 8, 32, 128, 512, 2048]
BINS = [2 ** m for m in range(1, 9)]


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


def _time(call: Callable[[], None], repeats: int, min_time: float) -> Dict[str, float]:
    t0 = time.perf_counter()
    call()  # warm-up, also sizes the repeats
    once = max(time.perf_counter() - t0, 1e-6)
    if once < min_time:
        t0 = time.perf_counter()
        call()
        once = max(time.perf_counter() - t0, 1e-6)
    n = max(1, int(math.ceil(min_time / once)))
    per_call: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        per_call.append((time.perf_counter() - t0) / n * 1e3)
    mean = sum(per_call) / len(per_call)
    std = math.sqrt(sum((v - mean) ** 2 for v in per_call) / max(1, len(per_call) - 1))
    return {"mean_ms": mean, "std_ms": std, "calls_per_repeat": n, "repeats_ms": per_call}


def _cell(args: argparse.Namespace, dim: int, dtype: torch.dtype, bins: int) -> Dict[str, Dict[str, float]]:
    """Times analytic (``bins == 0``) or bisection (K = ``bins``) inversion for one dim."""
    from ..transforms import RationalQuadraticSpline, rootfind_inverse

    gen = torch.Generator().manual_seed(args.seed + dim)
    spline = RationalQuadraticSpline(args.spline_bins)
    net = nn.Sequential(nn.Linear(dim, args.hidden), nn.SiLU(), nn.Linear(args.hidden, dim * spline.n_params))
    net = net.to(dtype)
    cond = torch.randn(args.batch_size, dim, generator=gen).to(dtype)
    y = torch.rand(args.batch_size, dim, generator=gen).to(dtype)

    def inverse(params: torch.Tensor):
        if bins == 0:
            return spline.inverse(y, params)
        return rootfind_inverse(spline, y, params, n_bins=bins, tol=args.tol)

    def inv() -> None:
        with torch.no_grad():
            inverse(net(cond).view(args.batch_size, dim, spline.n_params))

    def inv_bp() -> None:
        net.zero_grad(set_to_none=True)
        x, logdet = inverse(net(cond).view(args.batch_size, dim, spline.n_params))
        (x.sum() + logdet.sum()).backward()

    return {"inversion": _time(inv, args.repeats, args.min_time),
            "inversion_backprop": _time(inv_bp, args.repeats, args.min_time)}


def _fmt(entry: Dict[str, float]) -> str:
    return f"{entry['mean_ms']:9.3f} ±{entry['std_ms']:7.3f}"


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_write

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    cells = [(d, k) for d in args.dims for k in [0] + list(args.bins)]
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(cells), disable=args.no_progress, desc="bench inverse", unit="cell")
    except ImportError:  # pragma: no cover
        bar = None
    results: Dict[int, Dict[str, Dict]] = {}
    for dim, k in cells:
        if bar is not None:
            bar.set_postfix(dim=dim, K=k or "analytic")
        results.setdefault(dim, {})["analytic" if k == 0 else f"K={k}"] = _cell(args, dim, dtype, k)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    rows = []
    for dim in args.dims:
        res = results[dim]
        row = {"dim": dim}
        for mode in ("inversion", "inversion_backprop"):
            best_k = min(args.bins, key=lambda k: res[f"K={k}"][mode]["mean_ms"])
            ana, bis = res["analytic"][mode], res[f"K={best_k}"][mode]
            row[mode] = {"K_opt": best_k, "analytic": ana, "bisection": bis,
                         "ratio": bis["mean_ms"] / ana["mean_ms"]}
        rows.append(row)

    head = (f"{'dim':>5} | {'Kopt':>4} {'analytic ms':>18} {'bisection ms':>18} {'ratio':>6} |"
            f" {'Kopt':>4} {'analytic ms':>18} {'bisection ms':>18} {'ratio':>6}")
    print(f"\nTable SI-1 on {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, {args.dtype}, tol {args.tol:g}, spline bins {args.spline_bins}")
    print(f"{'':>5} | {'inversion':^50} | {'inversion + backprop':^50}")
    print(head)
    print("-" * len(head))
    for row in rows:
        a, b = row["inversion"], row["inversion_backprop"]
        print(f"{row['dim']:>5} | {a['K_opt']:>4} {_fmt(a['analytic'])} {_fmt(a['bisection'])} {a['ratio']:6.2f} |"
              f" {b['K_opt']:>4} {_fmt(b['analytic'])} {_fmt(b['bisection'])} {b['ratio']:6.2f}")

    meta = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "bench")}
    meta.update(threads_used=torch.get_num_threads(), torch=torch.__version__, machine=platform.machine())
    payload = {"config": meta, "table": rows, "timings": {str(d): r for d, r in results.items()}}
    with atomic_write(args.out) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0
