"""``smoothflow particles simulate|train|evaluate|export``: equivariant flows of the DW4 / LJ13 particle systems.

- ``simulate``: Metropolis MC data on the exact energy (equilibrium summary printed), one .npz with the
  papers' splits (1,000 test, 1,000 validation, the rest training).
- ``train``: maximum likelihood on the first ``--n-train`` training configurations; resumable
  (rerun the same command), bounded by ``--minutes`` and/or ``--iterations``.
- ``evaluate``: test NLL and the folded fraction (det dPhi/dx < 0) of a checkpoint or an export,
  optionally with the trained velocity field integrated by more RK4 steps.
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
    tr.add_argument("--eval-rk4-steps", type=int, default=0,
                    help="RK4 steps of the validated and tested map (default: --rk4-steps; e.g. the export's)")
    tr.add_argument("--coords-range", type=float, default=15.0,
                    help="bound of the EGNN coordinate update (reduced length; smaller folds later)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-val", type=int, default=200, help="validation configurations used for model selection")
    tr.add_argument("--val-every", type=int, default=50)
    tr.add_argument("--n-test", type=int, default=None,
                    help="test configurations for the final NLL (default: all, the papers' 1,000)")
    tr.add_argument("--threads", type=int, default=1)

    ev = sub.add_parser("evaluate", help="test NLL and folded fraction of a run's best.pt or an exported model")
    ev.add_argument("model", help="best.pt / last.pt of a training run, or an exported particle model (.pt)")
    ev.add_argument("--data", required=True, help=".npz from `smoothflow particles simulate` (its test split)")
    ev.add_argument("--rk4-steps", type=int, default=0,
                    help="integrate the trained velocity field with this many RK4 steps (default: the model's)")
    ev.add_argument("--n-test", type=int, default=None, help="test configurations (default: all)")
    ev.add_argument("--batch-size", type=int, default=100)
    ev.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ev.add_argument("--threads", type=int, default=1)

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
                       n_steps=args.rk4_steps, seed=args.seed, val_every=args.val_every, n_val=args.n_val,
                       n_test=args.n_test, coords_range=args.coords_range, eval_steps=args.eval_rk4_steps)
        test = result["test"]
        fold = f"; the map FOLDS on {100 * test['folded']:.1f}% of them" if test.get("folded") else ""
        print(f"test NLL {test['nll']:.3f} +- {test['nll_stderr']:.3f} on {test['n']} configurations "
              f"after {result['iterations']} iterations ({result['train_minutes']:.1f} min){fold}")
    elif args.particles_command == "evaluate":
        _evaluate(args)
    else:
        from ..particles.export import export_checkpoint

        meta = export_checkpoint(args.checkpoint, args.out, n_steps=args.rk4_steps)
        print(f"wrote {args.out} ({meta['system']}, {meta['n_parameters']} parameters, {meta['integrator']})")
    return 0


def _evaluate(args) -> None:
    import time

    import torch

    from ..io import atomic_write
    from ..particles.data import load_dataset
    from ..particles.export import load_any_flow
    from ..particles.train import evaluate

    if args.rk4_steps < 0 or (args.n_test is not None and args.n_test < 1):
        raise ValueError("--rk4-steps must be >= 0 and --n-test >= 1")
    flow = load_any_flow(args.model)
    if args.rk4_steps:
        flow.n_steps = args.rk4_steps
    data = load_dataset(args.data)
    if data["test"].shape[1:] != (flow.n_particles, flow.dim):
        raise ValueError(f"{args.data} holds {data['system']} configurations {data['test'].shape[1:]}, the flow is for "
                         f"{flow.n_particles} particles in {flow.dim}-D")
    x = torch.as_tensor(data["test"][:args.n_test], dtype=torch.float64)
    t0 = time.process_time()
    result = {"model": str(args.model), "system": data["system"], "rk4_steps": flow.n_steps,
              **evaluate(flow, x, batch_size=args.batch_size), "cpu_seconds": time.process_time() - t0}
    fold = f"; the map FOLDS (det < 0) on {100 * result['folded']:.1f}% of them" if result["folded"] else "; no folds"
    print(f"{data['system']}: test NLL {result['nll']:.3f} +- {result['nll_stderr']:.3f} "
          f"on {result['n']} configurations with {flow.n_steps} RK4 steps{fold} ({result['cpu_seconds']:.0f} s CPU)")
    if args.json:
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
