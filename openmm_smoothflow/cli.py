"""The ``smoothflow`` command.

Every subcommand lives in its own module of ``openmm_smoothflow.commands`` (``bench X`` in
``commands/bench_X.py``) exposing ``add_arguments(parser)`` and ``run(args) -> int``; those modules
alone parse arguments, and each is imported only when its subcommand runs (torch/openmm imports are slow).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from openmm_smoothflow import __version__

# name -> (module, one-line help). `bench` has its own sub-subcommands, listed in BENCHES.
COMMANDS = {
    "simulate": ("openmm_smoothflow.commands.simulate", "run OpenMM MD and write training data (.npz)"),
    "train": ("openmm_smoothflow.commands.train", "train a Boltzmann generator on MD data"),
    "export": ("openmm_smoothflow.commands.export", "export a checkpoint to one TorchScript model file"),
    "md": ("openmm_smoothflow.commands.md", "run MD with an exported flow as the potential"),
    "evaluate": ("openmm_smoothflow.commands.evaluate", "accuracy metrics and figures of a model"),
    "demo": ("openmm_smoothflow.commands.demo", "the shipped model driving OpenMM: NVE vs classical, figures"),
}
BENCHES = {
    "inverse": ("openmm_smoothflow.commands.bench_inverse", "analytic vs root-finding inversion (Table SI-1)"),
    "speed": ("openmm_smoothflow.commands.bench_speed", "ms per MD step, flow vs classical"),
    "train": ("openmm_smoothflow.commands.bench_train", "training throughput and peak memory"),
    "nve": ("openmm_smoothflow.commands.bench_nve", "energy conservation in NVE (Fig. 4)"),
    "toy": ("openmm_smoothflow.commands.bench_toy", "2-D toy problems: smooth vs spline force fields (Fig. 2)"),
    "losses": ("openmm_smoothflow.commands.bench_losses", "Table 1 (reduced): smooth vs spline under NLL/FM/KL loss weights"),
}


def _add(sub: "argparse._SubParsersAction", name: str, module: str, help_: str) -> None:
    parser = sub.add_parser(name, help=help_, description=help_)
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        parser.set_defaults(_run=None, _missing=module)
        return
    mod.add_arguments(parser)
    parser.set_defaults(_run=mod.run)


def build_parser(argv: List[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoothflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # Import only the module of the subcommand being run; the others get a bare entry for --help.
    wanted = argv[0] if argv else None
    for name, (module, help_) in COMMANDS.items():
        if name == wanted:
            _add(sub, name, module, help_)
        else:
            sub.add_parser(name, help=help_)
    bench = sub.add_parser("bench", help="benchmarks that print figures and write JSON")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    wanted_bench = argv[1] if wanted == "bench" and len(argv) > 1 else None
    for name, (module, help_) in BENCHES.items():
        if name == wanted_bench:
            _add(bench_sub, name, module, help_)
        else:
            bench_sub.add_parser(name, help=help_)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        print(f"smoothflow: this command is not available ({getattr(args, '_missing', '?')})", file=sys.stderr)
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
