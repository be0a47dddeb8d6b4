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
    from ..progress import progress_bar

    cells = [(d, k) for d in dims for k in [0] + list(bins)]
    bar = progress_bar(total=len(cells), enabled=progress, desc="bench inverse", unit="cell")
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


# ---- the bump mixture's root-finding inverse vs the spline's analytic one; sampling throughput -----

BUMP_SHAPES = [(1, 2), (1, 8), (1, 32), (64, 32), (64, 512)]  # (batch, dim)


def bump_rows(shapes=BUMP_SHAPES, bins=(2, 4, 8, 16), components: int = 8, repeats: int = 5,
              min_time: float = 0.02, tol: float = 1e-6, dtype: torch.dtype = torch.float32,
              seed: int = 0) -> List[Dict]:
    """Per (batch, dim): ms per inverse call (no_grad, params given: the inversion alone) of the analytic
    rational-quadratic spline (``components`` bins) and of the bump mixture (``components`` bumps, exp ramp
    with beta = 2 as the flows, ``BumpMixture.inverse``: multi-bin bisection) with K chosen from the element count
    (``rootfind.choose_bins``) and with each K of ``bins``; ratios bump / spline."""
    from ..transforms import BumpMixture, RationalQuadraticSpline, rootfind_inverse
    from ..transforms.rootfind import choose_bins

    rows = []
    for batch, dim in shapes:
        gen = torch.Generator().manual_seed(seed + dim)
        spline, bump = RationalQuadraticSpline(components), BumpMixture(n_components=components, beta=2)
        y = torch.rand(batch, dim, generator=gen).to(dtype)
        p_spline = torch.randn(batch, dim, spline.n_params, generator=gen).to(dtype)
        p_bump = torch.randn(batch, dim, bump.n_params, generator=gen).to(dtype)
        with torch.no_grad():
            ana = _time(lambda: spline.inverse(y, p_spline), repeats, min_time)
            auto = _time(lambda: bump.inverse(y, p_bump), repeats, min_time)
            by_k = {k: _time(lambda k=k: rootfind_inverse(bump, y, p_bump, n_bins=k, tol=bump.rootfind_tol),
                             repeats, min_time) for k in bins}
        best = min(by_k, key=lambda k: by_k[k]["mean_ms"])
        rows.append({"batch": batch, "dim": dim, "K_auto": choose_bins(batch * dim), "K_best": best,
                     "spline_analytic": ana, "bump_auto": auto, "bump_by_K": {str(k): v for k, v in by_k.items()},
                     "ratio_auto": auto["mean_ms"] / ana["mean_ms"],
                     "ratio_best": by_k[best]["mean_ms"] / ana["mean_ms"]})
    return rows


def format_bump_table(rows: List[Dict]) -> str:
    head = (f"{'batch':>5} {'dim':>5} | {'spline analytic ms':>18} | {'K auto':>6} {'bump ms':>9} {'ratio':>6} |"
            f" {'K best':>6} {'bump ms':>9} {'ratio':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        best = r["bump_by_K"][str(r["K_best"])]
        lines.append(f"{r['batch']:>5} {r['dim']:>5} | {r['spline_analytic']['mean_ms']:>18.3f} | {r['K_auto']:>6} "
                     f"{r['bump_auto']['mean_ms']:>9.3f} {r['ratio_auto']:>6.2f} | {r['K_best']:>6} "
                     f"{best['mean_ms']:>9.3f} {r['ratio_best']:>6.2f}")
    return "\n".join(lines)


def sampling_rows(batches=(1, 128), kinds=("smooth", "spline"), repeats: int = 3, min_time: float = 0.2,
                  old_bins: int = 16, seed: int = 0) -> List[Dict]:
    """Flow samples per second (``generator.sample``, no_grad, float32) of the paper-size alanine-dipeptide
    flows with random weights, per kind and batch; the smooth flow (root finding) with the bin count
    chosen from the element count and with the former fixed ``old_bins``; the spline flow inverts
    analytically."""
    from ..flows.generator import BoltzmannGenerator
    from ..md.systems import alanine_dipeptide_pdb, load_pdb

    topology = load_pdb(alanine_dipeptide_pdb()).topology
    rows = []
    for kind in kinds:
        torch.manual_seed(seed)
        generator = BoltzmannGenerator.from_topology(topology, kind=kind).eval()
        with torch.no_grad():  # random (non-identity) conditioners: the last layers start at zero
            for p in generator.parameters():
                p.add_(0.05 * torch.randn_like(p))
        settings = [None] if kind != "smooth" else [None, old_bins]
        for bins in settings:
            for layer in generator.layers:
                layer.transform.rootfind_bins = bins
            for batch in batches:
                with torch.no_grad():
                    t = _time(lambda: generator.sample(batch), repeats, min_time)
                rows.append({"kind": kind, "batch": batch, "bins": "auto" if bins is None else bins,
                             "ms_per_call": t["mean_ms"], "samples_per_s": 1e3 * batch / t["mean_ms"], "timing": t})
    return rows


def format_sampling_table(rows: List[Dict]) -> str:
    lines = [f"{'flow':<7} {'bins':>5} {'batch':>5} {'ms/call':>9} {'samples/s':>10}"]
    for r in rows:
        lines.append(f"{r['kind']:<7} {str(r['bins']):>5} {r['batch']:>5} {r['ms_per_call']:>9.2f} "
                     f"{r['samples_per_s']:>10.0f}")
    return "\n".join(lines)
