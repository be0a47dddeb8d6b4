"""The ``smoothflow`` command.

Every subcommand lives in its own module of ``openmm_smoothflow.commands`` (``bench X`` in
``commands/bench_X.py``) exposing ``add_arguments(parser)`` and ``run(args) -> int``; those modules
alone parse arguments, and each is imported only when its subcommand runs (torch/openmm imports are slow).
Errors end in one line ``smoothflow: error: ...`` and a documented exit code (``errors.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import traceback
import warnings
from typing import List, Optional

from openmm_smoothflow import __version__
from openmm_smoothflow.errors import EXIT_USAGE, RunFailed, SmoothflowWarning, Terminated, exit_code, one_line

# name -> (module, one-line help). `bench` has its own sub-subcommands, listed in BENCHES.
COMMANDS = {
    "simulate": ("openmm_smoothflow.commands.simulate", "run OpenMM MD and write training data (.npz)"),
    "train": ("openmm_smoothflow.commands.train", "train a Boltzmann generator on MD data"),
    "export": ("openmm_smoothflow.commands.export", "export a checkpoint to one TorchScript model file"),
    "md": ("openmm_smoothflow.commands.md", "run MD with an exported flow as the potential"),
    "evaluate": ("openmm_smoothflow.commands.evaluate", "accuracy metrics and figures of a model"),
    "sample": ("openmm_smoothflow.commands.sample", "Boltzmann-generator sampling: flow-MCMC + MD, reweighting"),
    "demo": ("openmm_smoothflow.commands.demo", "the shipped model driving OpenMM: NVE vs classical, figures"),
    "particles": ("openmm_smoothflow.commands.particles", "equivariant flows of DW4 / LJ13: simulate, train, export"),
}
BENCHES = {
    "inverse": ("openmm_smoothflow.commands.bench_inverse", "analytic vs root-finding inversion (Table SI-1)"),
    "speed": ("openmm_smoothflow.commands.bench_speed", "ms per MD step, flow vs classical"),
    "train": ("openmm_smoothflow.commands.bench_train", "training throughput and peak memory"),
    "nve": ("openmm_smoothflow.commands.bench_nve", "energy conservation in NVE (Fig. 4)"),
    "toy": ("openmm_smoothflow.commands.bench_toy", "2-D toy problems: smooth vs spline force fields (Fig. 2)"),
    "losses": ("openmm_smoothflow.commands.bench_losses", "Table 1 (reduced): smooth vs spline under NLL/FM/KL loss weights"),
    "particles": ("openmm_smoothflow.commands.bench_particles", "DW4 / LJ13 flows: NVE vs exact potential, Kish ESS, speed"),
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
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
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
    """Run one subcommand; returns its exit code (see ``errors.py``: 0 ok, 1 run failed, 2 bad usage or
    input, 130 interrupted, 143 terminated). Errors print one line ``smoothflow: error: ...``;
    ``--debug`` (anywhere on the line, or ``SMOOTHFLOW_DEBUG=1``) adds the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SMOOTHFLOW_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    args = build_parser(argv).parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        print(f"smoothflow: error: this command is not available ({getattr(args, '_missing', '?')})", file=sys.stderr)
        return EXIT_USAGE
    with warnings.catch_warnings(), _sigterm_as_interrupt():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, SmoothflowWarning):
                print(f"smoothflow: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            return int(run(args) or 0)
        except KeyboardInterrupt as exc:
            if debug:
                traceback.print_exc()
            said = "" if isinstance(exc, Terminated) or not str(exc) else f": {str(exc).strip()}"
            print(f"smoothflow: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}{said}", file=sys.stderr)
            return exit_code(exc)
        except Exception as exc:
            if debug:
                traceback.print_exc()
            ours = isinstance(exc, (RunFailed, ValueError, OSError))
            hint = "" if ours or debug else " (run with --debug for the traceback)"
            print(f"smoothflow: error: {one_line(exc)}{hint}", file=sys.stderr)
            return exit_code(exc)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) so that clean-up code runs."""
    def handler(signum, frame):
        raise Terminated("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
