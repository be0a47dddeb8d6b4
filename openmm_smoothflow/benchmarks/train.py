"""``smoothflow bench train``: training throughput (frames/s) and peak memory of the paper-size
model for NLL, NLL+FM and NLL+FM+KL at batch 128, on the molecule of a data file (``--data``; by
default the packaged alanine-dipeptide frames, the paper's molecule) or of ``--pdb``.

Each loss runs in its own subprocess so that the peak resident memory (``ru_maxrss``) belongs to that
loss alone. Data are random perturbations of the molecule's start structure with random forces:
throughput does not depend on the values. Reverse KL draws ``batch`` flow samples per step (root finding) and
scores them with OpenMM in the same process.
"""
import json
import subprocess
import sys
import time
from typing import Any, Dict, Optional

MODES = {"nll": dict(fm=0.0, kl=0.0), "nll+fm": dict(fm=0.001, kl=0.0), "nll+fm+kl": dict(fm=0.001, kl=0.1)}


def default_data() -> str:
    """The packaged alanine-dipeptide frames (they carry their molecule)."""
    from ..io import packaged

    return str(packaged("ala2-frames.npz"))


def measure(mode: str, batch: int, steps: int, threads: int, compile_: bool, kind: str,
            data: Optional[str] = None, pdb: Optional[str] = None) -> Dict[str, Any]:
    """Run ``steps`` optimiser steps (after 2 warm-up steps, ``warmup_s``: with ``compile_`` the
    compilation, :class:`~..training.compiled.CompiledFlow`) in this process; frames/s and peak MB. The
    molecule: ``pdb``, else the one ``data`` carries (default :func:`default_data`)."""
    import resource

    import torch

    from ..flows.generator import BoltzmannGenerator
    from ..md.molecule import load_molecule
    from ..md.systems import classical_system
    from ..training.compiled import CompiledFlow
    from ..training.losses import LossWeights, combined_loss
    from ..training.target import OpenMMTarget

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    molecule = load_molecule(pdb, data=data if data is not None or pdb is not None else default_data())
    generator = BoltzmannGenerator.from_topology(molecule.topology, kind=kind)
    model = CompiledFlow(generator) if compile_ else generator
    x0 = torch.tensor(molecule.start_structure(), dtype=torch.float32)
    x = x0 + 0.002 * torch.randn(batch, *x0.shape)  # near the structure: inside the model's support
    forces = 100.0 * torch.randn(batch, *x0.shape)
    outside = generator.count_outside(x)  # frames past a bond or angle range (the wall): should be 0
    weights = LossWeights(**MODES[mode])
    target = OpenMMTarget(classical_system(molecule.topology), 300.0) if weights.kl > 0 else None
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-5)

    def step() -> None:
        terms = combined_loss(model, x, forces, weights, target, batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(2):  # warm-up; with compile_, the compilation
        step()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    if target is not None:
        target.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"mode": mode, "frames_per_s": batch * steps / seconds, "ms_per_step": 1000 * seconds / steps,
            "peak_mb": peak_mb, "frames_outside": outside, "threads": threads, "compiled": compile_, "batch": batch,
            "warmup_s": warmup_s,
            "kind": kind, "parameters": generator.n_parameters(), "molecule": molecule.source,
            "atoms": molecule.n_atoms}


def measure_in_subprocess(mode: str, batch: int, steps: int, threads: int, compile_: bool, kind: str,
                          data: Optional[str] = None, pdb: Optional[str] = None) -> Dict[str, Any]:
    """:func:`measure` in a fresh Python process, so that its peak memory is this mode's alone;
    RuntimeError with the child's last stderr line if it fails."""
    code = ("import json, sys; from openmm_smoothflow.benchmarks.train import measure; "
            "print(json.dumps(measure(*json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([mode, batch, steps, threads, compile_, kind, data, pdb])],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?")
    return json.loads(proc.stdout.strip().splitlines()[-1])
