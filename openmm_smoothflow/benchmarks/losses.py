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

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

SETTINGS: Tuple[Tuple[float, float], ...] = ((0.0, 0.0), (0.0, 0.001), (0.1, 0.0), (0.1, 0.001))  # (omega_k, omega_f)
DEFAULT_KINDS = ("smooth", "spline")  # the flows of Table 1
METRICS = (("nll", "val_nll", "NLL (kT)"), ("fme", "val_fm", "FME ((kT/nm)^2)"), ("kld", "val_kl", "KLD (kT)"))


def train_one(kind: str, kl: float, fm: float, seed: int, out: Path, data: Sequence[str], stride: int = 10,
              epochs: int = 3, model: Optional[Dict[str, Any]] = None, max_steps: int = 0, lr: float = 5e-4,
              batch_size: int = 128, kl_samples: int = 128, val_samples: int = 256, threads: int = 0,
              progress: bool = True, pdb: Optional[str] = None) -> Dict[str, Any]:
    """Train one flow; its held-out metrics, or ``failed: True`` with the reason. The molecule is the
    data's (``pdb``: a PDB file overriding it)."""
    from ..training.config import TrainConfig
    from ..training.trainer import NonFiniteError, Trainer, TrainingFailed

    config = TrainConfig(data=[str(p) for p in data], pdb=pdb, out=str(out), kind=kind, kl=kl, fm=fm, model=dict(model or {}),
                         stride=stride, epochs=epochs, max_steps=max_steps, lr=lr, lr_decay=1.0,
                         batch_size=batch_size, seed=seed, kl_samples=kl_samples, val_kl_samples=val_samples,
                         val_frames=0, threads=threads, checkpoint_every=0, on_nonfinite="stop")
    result: Dict[str, Any] = {"kind": kind, "kl": kl, "fm": fm, "seed": seed, "failed": False, "error": None}
    start = time.perf_counter()
    try:
        record = Trainer(config, log=lambda line: None, overwrite=True, progress=progress).fit()  # each run starts fresh
    except (NonFiniteError, TrainingFailed) as exc:
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


def run_table(kinds: Sequence[str], settings: Sequence[Tuple[float, float]], replicas: int, seed: int,
              runs_dir: Optional[Path] = None, **common: Any) -> List[Dict[str, Any]]:
    """Train every (kind, setting) ``replicas`` times (seeds ``seed``, ``seed + 1``, ...) with
    :func:`train_one` (``common``: its keyword arguments), printing each run; one row per (kind,
    setting) with its :func:`summarize` and runs. Checkpoints go to ``runs_dir`` (default: a temporary
    directory, removed afterwards)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="smoothflow-losses-") as tmp:
        runs_dir = Path(runs_dir) if runs_dir else Path(tmp)
        for kind in kinds:
            for kl, fm in settings:
                runs = []
                for replica in range(replicas):
                    run_seed = seed + replica
                    r = train_one(kind, kl, fm, run_seed, runs_dir / f"{kind}-k{kl:g}-f{fm:g}-seed{run_seed}", **common)
                    runs.append(r)
                    what = (f"FAILED ({r['error']})" if r["failed"] else
                            f"NLL {r['nll']:.4g}  FME {r['fme']:.4g}  KLD {r['kld']:.4g}")
                    print(f"{kind:<7} omega_k={kl:g} omega_f={fm:g} seed {run_seed}: {what}  ({r['seconds']:.0f} s)",
                          flush=True)
                rows.append({"kind": kind, "kl": kl, "fm": fm, "summary": summarize(runs), "runs": runs})
    return rows


def finite_or_none(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
