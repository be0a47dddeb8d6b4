"""``smoothflow bench losses``: the paper's Table 1, reduced: smooth vs spline flows trained under the
loss weights of Eq. 5, (omega_k, omega_f) in {0, 0.1} x {0, 0.001} (omega_n = 1 - omega_k - omega_f).

    smoothflow bench losses --data ala2-part1.npz ala2-part2.npz --threads 1

Every (kind, setting) is trained ``--replicas`` times with seeds ``--seed``, ``--seed + 1``, ... by the
project's :class:`~openmm_smoothflow.training.trainer.Trainer` on every ``--stride``-th frame of the
data, at a constant learning rate (``lr_decay`` 1, as the paper's Table 1 runs). The test-set metrics
are the trainer's validation metrics of the final model on the frames it held out (the last 10% of each
of 10 contiguous blocks, never trained on): NLL (kT), FME, the force-matching error (the FM loss: the
squared force residual per component, (kT/nm)^2, the square of the force RMSE; the paper's Table 1
lists it x 1e-4), and KLD, the reverse KL estimate E_q[cutoff(u) + log q] (kT, up to log Z, with the
SI-2.5 energy cut-off of the KL loss) on ``--val-samples`` flow samples scored by the classical force
field. A run whose loss or gradient becomes NaN/inf, or whose final metrics are not finite, is
counted as failed (the paper's "failed runs"); means and standard errors are over the other replicas.
Prints the table, writes every run to ``--out`` (JSON).

CPU budget, measured: ``--epochs 10 --replicas 3 --threads 1`` (the paper's 10 epochs; 630 steps of
batch 128 per run) took 3,046 s for all 24 runs on a 2-core machine with a second job on the other core.
Seconds per run for (omega_k, omega_f) = (0, 0), (0, 0.001), (0.1, 0), (0.1, 0.001): smooth 49, 121,
199-295, 274-297 (the KL term samples through root finding; 128 samples per step scored by OpenMM);
spline 34, 84, 76, 136. The defaults (3 epochs, 2 replicas) cost about a fifth of that. ``--model
'{"hidden": [32, 32], "n_torsion_layers": 4, "n_ic_layers": 2}'`` costs about 40% less per step. Runs
this short rank the settings; they do not reproduce the paper's values.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

SETTINGS: Tuple[Tuple[float, float], ...] = ((0.0, 0.0), (0.0, 0.001), (0.1, 0.0), (0.1, 0.001))  # (omega_k, omega_f)
KINDS = ("smooth", "spline")
METRICS = (("nll", "val_nll", "NLL (kT)"), ("fme", "val_fm", "FME ((kT/nm)^2)"), ("kld", "val_kl", "KLD (kT)"))


def parse_setting(text: str) -> Tuple[float, float]:
    """``"KL,FM"`` (omega_k, omega_f), e.g. ``"0.1,0.001"``."""
    try:
        kl, fm = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"a setting is OMEGA_K,OMEGA_F (e.g. 0.1,0.001), not {text!r}") from None
    if kl < 0 or fm < 0 or kl + fm > 1:
        raise ValueError(f"setting {text!r}: need omega_k, omega_f >= 0 and omega_k + omega_f <= 1")
    return kl, fm


def train_one(kind: str, kl: float, fm: float, seed: int, out: Path, data: Sequence[str], stride: int = 10,
              epochs: int = 3, model: Optional[Dict[str, Any]] = None, max_steps: int = 0, lr: float = 5e-4,
              batch_size: int = 128, kl_samples: int = 128, val_samples: int = 256, threads: int = 0
              ) -> Dict[str, Any]:
    """Train one flow; its held-out metrics, or ``failed: True`` with the reason."""
    from ..training.config import TrainConfig
    from ..training.trainer import NonFiniteError, Trainer

    config = TrainConfig(data=[str(p) for p in data], out=str(out), kind=kind, kl=kl, fm=fm, model=dict(model or {}),
                         stride=stride, epochs=epochs, max_steps=max_steps, lr=lr, lr_decay=1.0,
                         batch_size=batch_size, seed=seed, kl_samples=kl_samples, val_kl_samples=val_samples,
                         val_frames=0, threads=threads, checkpoint_every=0, on_nonfinite="stop")
    result: Dict[str, Any] = {"kind": kind, "kl": kl, "fm": fm, "seed": seed, "failed": False, "error": None}
    start = time.perf_counter()
    try:
        record = Trainer(config, log=lambda line: None).fit()
    except NonFiniteError as exc:
        record = {}
        result.update(failed=True, error=str(exc).split(";")[0])
    result["seconds"] = round(time.perf_counter() - start, 2)
    for key, name, _ in METRICS:
        result[key] = float(record.get(name, math.nan))
    for key in ("force_rmse", "ess", "clash_fraction"):  # recorded per run, not tabulated
        result[key] = float(record.get("val_" + key, math.nan))
    present = [key for key, name, _ in METRICS if name in record]  # FME needs forces, KLD samples
    if not result["failed"] and not all(math.isfinite(result[key]) for key in present):
        result.update(failed=True, error="non-finite test metric")
    return result


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and standard error (over the replicas that did not fail) of each metric, and the failures."""
    ok = [r for r in runs if not r["failed"]]
    out: Dict[str, Any] = {"replicas": len(runs), "failed": len(runs) - len(ok)}
    for key, _, _ in METRICS + (("force_rmse", None, None),):
        values = [r[key] for r in ok if math.isfinite(r[key])]
        n = len(values)
        mean = sum(values) / n if n else math.nan
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan
        out[key] = {"mean": mean, "se": se, "n": n}
    return out


def _cell(stat: Dict[str, Any]) -> str:
    if not stat["n"]:
        return "-"
    if not math.isfinite(stat["se"]):
        return f"{stat['mean']:.4g}"
    return f"{stat['mean']:.4g} ± {stat['se']:.2g}"


def format_table(rows: List[Dict[str, Any]]) -> str:
    header = f"{'kind':<7} {'omega_k':>7} {'omega_f':>7}  " + "  ".join(f"{title:>20}" for _, _, title in METRICS) + "  failed"
    lines = [header, "-" * len(header)]
    for row in rows:
        s = row["summary"]
        lines.append(f"{row['kind']:<7} {row['kl']:>7g} {row['fm']:>7g}  "
                     + "  ".join(f"{_cell(s[key]):>20}" for key, _, _ in METRICS) + f"  {s['failed']}/{s['replicas']}")
    return "\n".join(lines)


def _finite_or_none(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--data", nargs="+", required=True, help="MD data .npz files (positions and forces)")
    parser.add_argument("--stride", type=int, default=10, help="use every stride-th frame (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default %(default)s)")
    parser.add_argument("--replicas", type=int, default=2, help="runs per (kind, setting), seeds differ (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first replica (default %(default)s)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=["smooth", "spline", "affine"])
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=list(SETTINGS), metavar="KL,FM",
                        help="(omega_k, omega_f) pairs (default: 0,0 0,0.001 0.1,0 0.1,0.001)")
    parser.add_argument("--model", type=json.loads, default={}, metavar="JSON",
                        help='architecture overrides, e.g. \'{"hidden": [32, 32]}\' (default: the SI-2.4 model)')
    parser.add_argument("--max-steps", type=int, default=0, help=">0: at most this many steps per epoch")
    parser.add_argument("--lr", type=float, default=5e-4, help="constant learning rate (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--kl-samples", type=int, default=128, help="flow samples per step for the KL term")
    parser.add_argument("--val-samples", type=int, default=256, help="flow samples for the test-set KLD")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--runs-dir", default=None, help="keep each run's checkpoints here (default: a temporary directory)")
    parser.add_argument("--out", default="bench-losses.json", help="JSON file of every run and the table")


def run(args) -> int:
    from ..io import atomic_write
    from ..training.data import load_md_data, split_blocks

    data = load_md_data(args.data, stride=args.stride)
    n_train = len(split_blocks(len(data), 0.1, 10)[0])
    if n_train < args.batch_size:
        print(f"smoothflow bench losses: {n_train} training frames at stride {args.stride}, fewer than one batch "
              f"of {args.batch_size}: lower --stride or --batch-size")
        return 2
    needs_forces = any(fm > 0 for _, fm in args.settings)
    if needs_forces and data.forces is None:
        print("smoothflow bench losses: force matching needs forces in every data file")
        return 2
    print(f"{len(data)} frames (stride {args.stride}), {n_train} for training; {args.epochs} epochs, "
          f"{args.replicas} replicas, kinds {' '.join(args.kinds)}, model overrides {args.model or 'none'}", flush=True)
    common = dict(data=args.data, stride=args.stride, epochs=args.epochs, model=args.model, max_steps=args.max_steps,
                  lr=args.lr, batch_size=args.batch_size, kl_samples=args.kl_samples, val_samples=args.val_samples,
                  threads=args.threads)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="smoothflow-losses-") as tmp:
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tmp)
        for kind in args.kinds:
            for kl, fm in args.settings:
                runs = []
                for replica in range(args.replicas):
                    seed = args.seed + replica
                    r = train_one(kind, kl, fm, seed, runs_dir / f"{kind}-k{kl:g}-f{fm:g}-seed{seed}", **common)
                    runs.append(r)
                    what = (f"FAILED ({r['error']})" if r["failed"] else
                            f"NLL {r['nll']:.4g}  FME {r['fme']:.4g}  KLD {r['kld']:.4g}")
                    print(f"{kind:<7} omega_k={kl:g} omega_f={fm:g} seed {seed}: {what}  ({r['seconds']:.0f} s)", flush=True)
                rows.append({"kind": kind, "kl": kl, "fm": fm, "summary": summarize(runs), "runs": runs})
    table = format_table(rows)
    print()
    print(table)
    result = {"settings": {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)},
              "rows": rows, "table": table, "seconds": round(time.perf_counter() - start, 1)}
    with atomic_write(Path(args.out)) as tmp_path:
        tmp_path.write_text(json.dumps(_finite_or_none(result), indent=2, allow_nan=False))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0
