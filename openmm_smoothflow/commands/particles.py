"""``smoothflow particles simulate|train|export``: equivariant flows of the DW4 / LJ13 particle systems.

- ``simulate``: Metropolis MC data on the exact energy (equilibrium summary printed), one .npz with the
  papers' splits (1,000 test, 1,000 validation, the rest training).
- ``train``: maximum likelihood on the first ``--n-train`` training configurations; resumable
  (rerun the same command), bounded by ``--minutes`` and/or ``--iterations``.
- ``export``: a run's ``best.pt`` to one TorchScript energy file (positions (N, 3) nm -> kJ/mol),
  loadable with ``FlowPotential`` like the molecular exports.
"""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="particles_command", required=True)
    sim = sub.add_parser("simulate", help="Metropolis MC data of DW4 or LJ13 (.npz with the papers' splits)")
    sim.add_argument("--system", choices=["dw4", "lj13"], required=True)
    sim.add_argument("--samples", type=int, default=None,
                     help="configurations in total (default: the largest training set + 2,000)")
    sim.add_argument("--chains", type=int, default=1000)
    sim.add_argument("--burn-in", type=int, default=5000, help="MC steps with step-size adaptation")
    sim.add_argument("--pilot", type=int, default=2000, help="MC steps measuring the autocorrelation time")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--threads", type=int, default=1)
    sim.add_argument("--out", required=True, help="output .npz")

    tr = sub.add_parser("train", help="train an E(n) equivariant flow (resumable)")
    tr.add_argument("--data", required=True, help=".npz from `smoothflow particles simulate`")
    tr.add_argument("--n-train", type=int, default=None, help="training-set size (first n configurations)")
    tr.add_argument("--out", required=True, help="run directory (last.pt, best.pt, result.json)")
    tr.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget (0: no limit)")
    tr.add_argument("--iterations", type=int, default=0, help="iteration budget (0: no limit)")
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=1.5e-3)
    tr.add_argument("--rk4-steps", type=int, default=2, help="fixed RK4 steps of the flow map")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-val", type=int, default=200, help="validation configurations used for model selection")
    tr.add_argument("--val-every", type=int, default=50)
    tr.add_argument("--threads", type=int, default=1)

    ex = sub.add_parser("export", help="export a run's best.pt to one TorchScript model file")
    ex.add_argument("checkpoint", help="best.pt of a training run")
    ex.add_argument("--out", required=True, help="output model file (.pt)")
    ex.add_argument("--rk4-steps", type=int, default=0,
                    help="RK4 steps of the exported map (default: as trained; more: closer to the ODE flow)")


def run(args) -> int:
    import torch

    torch.set_num_threads(getattr(args, "threads", 1))
    if args.particles_command == "simulate":
        from ..particles.data import N_TEST, N_VAL, TRAIN_SIZES, generate, save_dataset

        n = args.samples or max(TRAIN_SIZES[args.system]) + N_TEST + N_VAL
        positions, summary = generate(args.system, n, args.chains, args.burn_in, args.pilot, args.seed)
        save_dataset(args.out, args.system, positions, summary)
        print(json.dumps({k: v for k, v in summary.items() if not k.startswith("histogram")}, indent=1))
        print(f"wrote {args.out}")
    elif args.particles_command == "train":
        from ..particles.train import train

        result = train(args.data, args.out, n_train=args.n_train, minutes=args.minutes,
                       max_iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                       n_steps=args.rk4_steps, seed=args.seed, val_every=args.val_every, n_val=args.n_val)
        print(f"test NLL {result['test']['nll']:.3f} +- {result['test']['nll_stderr']:.3f} "
              f"after {result['iterations']} iterations ({result['train_minutes']:.1f} min)")
    else:
        from ..particles.export import export_checkpoint

        meta = export_checkpoint(args.checkpoint, args.out, n_steps=args.rk4_steps)
        print(f"wrote {args.out} ({meta['system']}, {meta['n_parameters']} parameters, {meta['integrator']})")
    return 0
