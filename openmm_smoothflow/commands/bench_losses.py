"""``smoothflow bench losses``: Table 1 (reduced), smooth vs spline flows under the loss weights of Eq. 5
(``benchmarks/losses.py``)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Tuple

from ..benchmarks.losses import DEFAULT_KINDS, SETTINGS
from ..flows.generator import KINDS
from .arguments import non_negative_int, positive_float, positive_int


def parse_setting(text: str) -> Tuple[float, float]:
    """``"KL,FM"`` (omega_k, omega_f), e.g. ``"0.1,0.001"``."""
    try:
        kl, fm = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"a setting is OMEGA_K,OMEGA_F (e.g. 0.1,0.001), not {text!r}") from None
    if kl < 0 or fm < 0 or kl + fm > 1:
        raise ValueError(f"setting {text!r}: need omega_k, omega_f >= 0 and omega_k + omega_f <= 1")
    return kl, fm


def add_arguments(parser) -> None:
    parser.add_argument("--data", nargs="+", required=True, help="MD data .npz files (positions and forces)")
    parser.add_argument("--pdb", default=None, help="PDB file of the molecule (default: the one the data carry)")
    parser.add_argument("--stride", type=positive_int, default=10, help="use every stride-th frame (default %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=3, help="epochs per run (default %(default)s)")
    parser.add_argument("--replicas", type=positive_int, default=2, help="runs per (kind, setting), seeds differ (default %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first replica (default %(default)s)")
    parser.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS), choices=list(KINDS))
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=list(SETTINGS), metavar="KL,FM",
                        help="(omega_k, omega_f) pairs (default: 0,0 0,0.001 0.1,0 0.1,0.001)")
    parser.add_argument("--model", type=json.loads, default={}, metavar="JSON",
                        help='architecture overrides, e.g. \'{"hidden": [32, 32]}\' (default: the SI-2.4 model)')
    parser.add_argument("--max-steps", type=non_negative_int, default=0, help=">0: at most this many steps per epoch")
    parser.add_argument("--lr", type=positive_float, default=5e-4, help="constant learning rate (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--kl-samples", type=positive_int, default=128, help="flow samples per step for the KL term")
    parser.add_argument("--val-samples", type=positive_int, default=256, help="flow samples for the test-set KLD")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--runs-dir", default=None, help="keep each run's checkpoints here (default: a temporary directory)")
    parser.add_argument("--out", default="bench-losses.json", help="JSON file of every run and the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from ..benchmarks.losses import finite_or_none, format_table, run_table
    from ..io import atomic_write
    from ..training.data import load_md_data, split_blocks

    from ..md.molecule import check_atoms, load_molecule

    data = load_md_data(args.data, stride=args.stride)
    molecule = load_molecule(args.pdb, data=args.data)  # before any training: a clear error
    check_atoms(molecule, data.n_atoms, "the data")
    n_train = len(split_blocks(len(data), 0.1, 10)[0])
    if n_train < args.batch_size:
        print(f"smoothflow bench losses: {n_train} training frames at stride {args.stride}, fewer than one batch "
              f"of {args.batch_size}: lower --stride or --batch-size")
        return 2
    needs_forces = any(fm > 0 for _, fm in args.settings)
    if needs_forces and data.forces is None:
        print("smoothflow bench losses: force matching needs forces in every data file")
        return 2
    print(f"molecule of {molecule.source} ({molecule.n_atoms} atoms); "
          f"{len(data)} frames (stride {args.stride}), {n_train} for training; {args.epochs} epochs, "
          f"{args.replicas} replicas, kinds {' '.join(args.kinds)}, model overrides {args.model or 'none'}", flush=True)
    common = dict(data=args.data, stride=args.stride, epochs=args.epochs, model=args.model, max_steps=args.max_steps,
                  lr=args.lr, batch_size=args.batch_size, kl_samples=args.kl_samples, val_samples=args.val_samples,
                  threads=args.threads, progress=not args.no_progress, pdb=args.pdb)
    start = time.perf_counter()
    rows = run_table(args.kinds, args.settings, args.replicas, args.seed, args.runs_dir, **common)
    table = format_table(rows)
    print()
    print(table)
    result = {"settings": {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)},
              "rows": rows, "table": table, "seconds": round(time.perf_counter() - start, 1)}
    with atomic_write(Path(args.out)) as tmp_path:
        tmp_path.write_text(json.dumps(finite_or_none(result), indent=2, allow_nan=False))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0
