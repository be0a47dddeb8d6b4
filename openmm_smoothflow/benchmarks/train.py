"""``smoothflow bench train``: training throughput (frames/s) and peak memory of the paper-size
alanine-dipeptide model for NLL, NLL+FM and NLL+FM+KL at batch 128.

Each loss runs in its own subprocess so that the peak resident memory (``ru_maxrss``) belongs to that
loss alone. Data are random perturbations of the packaged structure with random forces: throughput
does not depend on the values. Reverse KL draws ``batch`` flow samples per step (root finding) and
scores them with OpenMM in the same process.
"""
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

MODES = {"nll": dict(fm=0.0, kl=0.0), "nll+fm": dict(fm=0.001, kl=0.0), "nll+fm+kl": dict(fm=0.001, kl=0.1)}


def measure(mode: str, batch: int, steps: int, threads: int, compile_: bool, kind: str) -> Dict[str, Any]:
    """Run ``steps`` optimiser steps (after 2 warm-up steps) in this process; frames/s and peak MB."""
    import resource

    import torch

    from ..flows.generator import BoltzmannGenerator
    from ..md.systems import alanine_dipeptide_pdb, classical_system, load_pdb
    from ..md.target import OpenMMTarget
    from ..training.losses import LossWeights, combined_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pdb = load_pdb(alanine_dipeptide_pdb())
    generator = BoltzmannGenerator.from_topology(pdb.topology, kind=kind)
    model = torch.compile(generator) if compile_ else generator
    x0 = torch.tensor(pdb.getPositions(asNumpy=True)._value, dtype=torch.float32) / 10.0
    x = x0 + 0.002 * torch.randn(batch, *x0.shape)
    forces = 100.0 * torch.randn(batch, *x0.shape)
    weights = LossWeights(**MODES[mode])
    target = OpenMMTarget(classical_system(pdb.topology), 300.0) if weights.kl > 0 else None
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-5)

    def step() -> None:
        terms = combined_loss(model, x, forces, weights, target, batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    if target is not None:
        target.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"mode": mode, "frames_per_s": batch * steps / seconds, "ms_per_step": 1000 * seconds / steps,
            "peak_mb": peak_mb, "threads": threads, "compile": compile_, "batch": batch, "kind": kind,
            "parameters": generator.n_parameters()}


def add_arguments(parser) -> None:
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator")
    parser.add_argument("--kind", default="smooth", choices=["smooth", "spline", "affine"])
    parser.add_argument("--out", default="bench-train.json")
    parser.add_argument("--_one", default=None, help=__import__("argparse").SUPPRESS)


def run(args) -> int:
    from ..io import atomic_write

    if args._one:  # child process: one mode, JSON on stdout
        print(json.dumps(measure(args._one, args.batch, args.steps, args.threads, args.compile, args.kind)))
        return 0
    results = []
    print(f"{'loss':<10} {'frames/s':>9} {'ms/step':>8} {'peak MB':>8}  ({args.kind}, batch {args.batch}, "
          f"{args.threads} threads, compile={args.compile})")
    for mode in args.modes:
        cmd = [sys.executable, "-m", "openmm_smoothflow.cli", "bench", "train", "--_one", mode, "--batch",
               str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads), "--kind", args.kind]
        cmd += ["--compile"] if args.compile else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{mode:<10} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{mode:<10} {r['frames_per_s']:>9.0f} {r['ms_per_step']:>8.1f} {r['peak_mb']:>8.0f}")
    with atomic_write(Path(args.out)) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0
