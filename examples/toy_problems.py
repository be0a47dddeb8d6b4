"""Reproduce the paper's 2-D toy figure (Fig. 2 / SI-1): reference, spline-flow and smooth-flow force
fields on the ring energy (non-periodic) and on its periodic version (torus).

    python examples/toy_problems.py                  # the `smoothflow bench toy` defaults: a few minutes
    python examples/toy_problems.py --quick          # a tiny run (seconds), e.g. as a smoke test

Writes ``toy.png`` (the figure) and ``toy.json`` (the metrics table) into ``--out-dir`` and prints the
table. See ``openmm_smoothflow/benchmarks/toy_models.py`` for the energies, the sampler and the flows,
``openmm_smoothflow/benchmarks/toy.py`` for the metrics and the figure.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from openmm_smoothflow.benchmarks import toy, toy_models
from openmm_smoothflow.io import atomic_write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=".", help="where toy.png and toy.json go (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=2500, help="Adam steps per flow (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run: 400 MH chains x 200 steps, 100 Adam steps, small flows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = dict(n_iter=args.iterations, seed=args.seed, progress=not args.no_progress)
    if args.quick:
        settings.update(n_side=20, n_burnin=200, n_record=5, n_iter=min(args.iterations, 100), batch_size=256,
                        n_components=8, hidden=(32, 32), n_grid=64, n_quiver=24)
    results, panels = {}, {}
    for problem in toy_models.PROBLEMS:
        results[problem], panels[problem] = toy.run_problem(problem, **settings)
    print(toy.format_table(results))

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    toy.plot_toy(panels, out / "toy.png")
    with atomic_write(out / "toy.json") as tmp:
        tmp.write_text(json.dumps({"settings": {**settings, "quick": args.quick}, "results": results}, indent=1,
                                  default=str))
    print(f"wrote {out / 'toy.png'} and {out / 'toy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
