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
import math
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

DIMS = [2, 8, 32, 128, 512, 2048]
BINS = [2 ** m for m in range(1, 9)]


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


def _cell(dim: int, dtype: torch.dtype, bins: int, batch_size: int, spline_bins: int, hidden: int, repeats: int,
          min_time: float, tol: float, seed: int) -> Dict[str, Dict[str, float]]:
    """Times analytic (``bins == 0``) or bisection (K = ``bins``) inversion for one dim."""
    from ..transforms import RationalQuadraticSpline, rootfind_inverse

    gen = torch.Generator().manual_seed(seed + dim)
    spline = RationalQuadraticSpline(spline_bins)
    net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim * spline.n_params))
    net = net.to(dtype)
    cond = torch.randn(batch_size, dim, generator=gen).to(dtype)
    y = torch.rand(batch_size, dim, generator=gen).to(dtype)

    def inverse(params: torch.Tensor):
        if bins == 0:
            return spline.inverse(y, params)
        return rootfind_inverse(spline, y, params, n_bins=bins, tol=tol)

    def inv() -> None:
        with torch.no_grad():
            inverse(net(cond).view(batch_size, dim, spline.n_params))

    def inv_bp() -> None:
        net.zero_grad(set_to_none=True)
        x, logdet = inverse(net(cond).view(batch_size, dim, spline.n_params))
        (x.sum() + logdet.sum()).backward()

    return {"inversion": _time(inv, repeats, min_time),
            "inversion_backprop": _time(inv_bp, repeats, min_time)}


def _fmt(entry: Dict[str, float]) -> str:
    return f"{entry['mean_ms']:9.3f} ±{entry['std_ms']:7.3f}"


def table_si1(dims=DIMS, bins=BINS, batch_size: int = 64, spline_bins: int = 8, hidden: int = 64, repeats: int = 5,
              min_time: float = 0.02, tol: float = 1e-6, dtype: torch.dtype = torch.float32, seed: int = 0,
              progress: bool = True) -> Tuple[List[Dict], Dict[int, Dict[str, Dict]]]:
    """Time every (dim, method) cell; returns the table rows (per dim and mode: the fastest K, the
    analytic and that bisection timing, their ratio) and every cell's timings by dim."""
    from tqdm import tqdm

    cells = [(d, k) for d in dims for k in [0] + list(bins)]
    bar = tqdm(total=len(cells), disable=not progress, desc="bench inverse", unit="cell")
    results: Dict[int, Dict[str, Dict]] = {}
    for dim, k in cells:
        bar.set_postfix(dim=dim, K=k or "analytic")
        results.setdefault(dim, {})["analytic" if k == 0 else f"K={k}"] = _cell(
            dim, dtype, k, batch_size, spline_bins, hidden, repeats, min_time, tol, seed)
        bar.update(1)
    bar.close()

    rows = []
    for dim in dims:
        res = results[dim]
        row = {"dim": dim}
        for mode in ("inversion", "inversion_backprop"):
            best_k = min(bins, key=lambda k: res[f"K={k}"][mode]["mean_ms"])
            ana, bis = res["analytic"][mode], res[f"K={best_k}"][mode]
            row[mode] = {"K_opt": best_k, "analytic": ana, "bisection": bis,
                         "ratio": bis["mean_ms"] / ana["mean_ms"]}
        rows.append(row)
    return rows, results


def format_table(rows: List[Dict]) -> str:
    """Table SI-1: per dim, inversion and inversion + backprop (fastest K, analytic and bisection ms, ratio)."""
    head = (f"{'dim':>5} | {'Kopt':>4} {'analytic ms':>18} {'bisection ms':>18} {'ratio':>6} |"
            f" {'Kopt':>4} {'analytic ms':>18} {'bisection ms':>18} {'ratio':>6}")
    lines = [f"{'':>5} | {'inversion':^50} | {'inversion + backprop':^50}", head, "-" * len(head)]
    for row in rows:
        a, b = row["inversion"], row["inversion_backprop"]
        lines.append(f"{row['dim']:>5} | {a['K_opt']:>4} {_fmt(a['analytic'])} {_fmt(a['bisection'])} {a['ratio']:6.2f} |"
                     f" {b['K_opt']:>4} {_fmt(b['analytic'])} {_fmt(b['bisection'])} {b['ratio']:6.2f}")
    return "\n".join(lines)
