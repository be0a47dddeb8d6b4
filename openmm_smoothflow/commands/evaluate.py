"""``smoothflow evaluate CHECKPOINT --data FILE``: accuracy metrics and figures of a trained flow
(``analysis/evaluate.py``); the molecule is the data's (``--pdb`` overrides)."""
from pathlib import Path
from .arguments import non_negative_int, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (best.pt) or an exported model (.pt)")
    parser.add_argument("--data", nargs="+", required=True, help="MD data .npz (held-out blocks are used "
                        "when these are the training files)")
    parser.add_argument("--pdb", default=None, help="PDB file of the molecule (default: the one the data carry)")
    parser.add_argument("--frames", type=positive_int, default=5000, help="held-out frames to evaluate")
    parser.add_argument("--samples", type=positive_int, default=5000, help="flow samples for KL / ESS")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the flow samples (default 0)")
    parser.add_argument("--threads", type=non_negative_int, default=0)
    parser.add_argument("--out", default="evaluate", help="output directory (metrics.json, PNGs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from ..analysis.evaluate import evaluate

    metrics = evaluate(args.checkpoint, args.data, Path(args.out), args.frames, args.samples, args.threads,
                       progress=not args.no_progress, pdb=args.pdb, seed=args.seed)
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
        print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    figures = [name for name in ("ramachandran.png", "forces.png", "energies.png") if (Path(args.out) / name).exists()]
    print(f"wrote {args.out}/metrics.json" + "".join(f", {name}" for name in figures))
    return 0
