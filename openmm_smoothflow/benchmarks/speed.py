"""``smoothflow bench speed``: ms per MD step and ns/day (1 fs step), a smooth flow vs the classical force field.

Side by side in one process, on the molecule of ``--model`` (an export: its stored molecule and start
structure; the model itself is timed too, as a TorchForce in float64 on each platform) or of
``--pdb``, by default the packaged alanine dipeptide, the paper's molecule (Langevin, 300 K, 1/ps, 1 fs):

* classical: amber99sbildn + OBC (``md.systems.classical_system``) on each ``--platforms`` platform;
* smooth flow, paper size, random weights (``BoltzmannGenerator.from_topology``) exported with
  ``potential.export``: ``openmmtorch.TorchForce`` in float64 and float32 on each platform (the export's
  force is its hand-written reverse pass, ``analytic_gradient``), the same export with autograd forces
  (``analytic_gradient=False``, float64, Reference platform) and the ``compiled`` backend
  (``openmm.PythonForce`` around ``torch.compile`` of the eager generator, Reference platform) and the
  ``aoti`` backend (``openmm.PythonForce`` around the AOTInductor package of the hand-written
  energy+force pass, :mod:`..potential.aoti`, Reference platform);
* the spline flow of the same size as a TorchForce (float64, Reference; autograd forces), for comparison.

Each MD row runs ``--warmup`` steps, then ``--repeats`` times ``--steps`` steps; ms/step is the median
of the repeats (the best one is stored too); ns/day = 86.4 / (ms/step). Outside OpenMM it times the
batch-1 energy+force of the eager generator (autograd) and of the exported TorchScript modules as
``torch.jit.load`` returns them (float64) and counts the profiler events (ATen ops, nested ones
included, and autograd nodes) of one energy+force. It also checks that the compiled and aoti
backends' energies and forces equal the TorchForce's at the same positions, and states the ratios of
the fastest flow row to the classical Reference row of the same run.

``torch.compile`` of the paper model takes minutes on a busy CPU with a cold inductor cache
(``--skip-compiled`` leaves it out); so does the first AOTInductor build of a model (cached on disk
afterwards, ``$SMOOTHFLOW_CACHE``; ``--skip-aoti``). Timings are noisy on a shared machine: compare rows
of one run.
"""
import os
import platform as platform_module
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

SEED = 0


def md_speed(system, positions: np.ndarray, platform: str, steps: int, repeats: int, warmup: int,
             threads: int) -> Dict[str, Any]:
    """Langevin MD of ``system``: ms per step (median and best of ``repeats``), ns/day, the time of Context
    creation and the first energy+force evaluation (compilation, TorchScript profiling runs) and whether the
    run stayed finite."""
    import openmm
    from openmm import unit

    from ..md.systems import get_platform

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtoseconds)
    integrator.setRandomNumberSeed(SEED + 1)
    props = {"Threads": str(threads)} if platform.lower() == "cpu" else {}
    t0 = time.perf_counter()
    context = openmm.Context(system, integrator, get_platform(platform), props)
    context.setPositions(positions)
    context.getState(getEnergy=True, getForces=True)
    first_s = time.perf_counter() - t0
    context.setVelocitiesToTemperature(300 * unit.kelvin, SEED + 2)
    integrator.step(warmup)
    per_step: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        integrator.step(steps)
        per_step.append((time.perf_counter() - t0) / steps * 1e3)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    ms = statistics.median(per_step)
    return dict(ms_per_step=ms, best_ms_per_step=min(per_step), ns_per_day=86.4 / ms, repeats_ms=per_step,
                first_eval_s=first_s, final_energy_finite=bool(np.isfinite(energy)))


def time_call(call: Callable[[], Any], min_time: float = 0.5, repeats: int = 5) -> Dict[str, float]:
    """ms per call: median (and best) of ``repeats`` timings of n calls, n sized to last ``min_time`` s."""
    call()
    call()
    t0 = time.perf_counter()
    call()
    n = max(1, int(min_time / max(time.perf_counter() - t0, 1e-6)))
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        per_call.append((time.perf_counter() - t0) / n * 1e3)
    return dict(ms=statistics.median(per_call), best_ms=min(per_call))


def count_ops(call: Callable[[], Any]) -> int:
    """Profiler events (ATen ops, nested ones included, and autograd nodes) of one ``call``."""
    import sys
    import warnings

    from torch.profiler import ProfilerActivity, profile

    call()
    sys.stderr.flush()
    saved = os.dup(2)  # the profiler's C++ backend logs start/stop lines to stderr: silence them
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings():
            os.dup2(devnull.fileno(), 2)
            warnings.simplefilter("ignore")
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                call()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return len(prof.events())


def energy_force_calls(generator, model_paths: Dict[str, str], x0: np.ndarray) -> Dict[str, Callable[[], Any]]:
    """Batch-1 energy+force (float64) of the eager generator and of exported TorchScript modules."""
    import torch

    x = torch.tensor(x0, dtype=torch.float64)

    def eager():
        xe = x[None].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(generator(xe).sum(), xe)
        return grad

    def scripted(module):
        def call():
            xs = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(module(xs), xs)
            return grad
        return call

    calls = {"eager": eager}
    calls.update({name: scripted(torch.jit.load(path)) for name, path in model_paths.items()})
    return calls


def single_point(system, positions: np.ndarray, platform: str = "Reference"):
    """Energy (kJ/mol) and forces (kJ/mol/nm) of ``system`` at ``positions``."""
    from openmm import unit

    from ..md.systems import make_context

    context = make_context(system, platform)
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def step_ratios(rows: List[Dict[str, Any]], reference: str) -> Dict[str, Any]:
    """The fastest smooth-flow MD row and the float64 TorchForce row on ``reference``, in ms/step and as
    multiples of the classical row on ``reference`` ({} without a classical row)."""
    ok = [r for r in rows if "error" not in r]
    classical = [r for r in ok if r["potential"] == "classical" and r["platform"] == reference]
    flows = [r for r in ok if r["potential"] == "smooth"]
    torchforce = [r for r in flows if r["backend"] == "torchforce" and r["dtype"] == "float64"
                  and r["platform"] == reference]
    if not classical or not flows or not torchforce:
        return {}
    fastest = min(flows, key=lambda r: r["ms_per_step"])
    base = classical[0]["ms_per_step"]
    return dict(classical_ms=base, fastest_flow=f"{fastest['backend']} {fastest['platform']} {fastest['dtype']}",
                fastest_flow_ms=fastest["ms_per_step"], fastest_vs_classical=fastest["ms_per_step"] / base,
                torchforce_ms=torchforce[0]["ms_per_step"], torchforce_vs_classical=torchforce[0]["ms_per_step"] / base)


# ---- the benchmark ---------------------------------------------------------------------------------

def format_table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'potential':<10} {'backend':<12} {'platform':<10} {'dtype':<8} {'ms/step':>8} {'best':>8} "
             f"{'ns/day':>7} {'setup s':>8}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['potential']:<10} {r['backend']:<12} {r['platform']:<10} {r['dtype']:<8} "
                         f"failed: {r['error']}")
            continue
        lines.append(f"{r['potential']:<10} {r['backend']:<12} {r['platform']:<10} {r['dtype']:<8} "
                     f"{r['ms_per_step']:>8.2f} {r['best_ms_per_step']:>8.2f} {r['ns_per_day']:>7.2f} "
                     f"{r['first_eval_s']:>8.2f}" + ("" if r["final_energy_finite"] else "  (non-finite!)"))
    return "\n".join(lines)


def speed_benchmark(steps: int = 200, repeats: int = 3, warmup: int = 20, platforms=("Reference", "CPU"),
                    threads: int = 1, skip_compiled: bool = False, skip_aoti: bool = False,
                    model: Optional[str] = None, pdb: Optional[str] = None) -> Dict[str, Any]:
    """Every row of the benchmark (see the module docstring), printed as it is measured; returns the
    protocol, machine, MD rows, batch-1 timings outside OpenMM and the compiled-vs-TorchForce check.
    The molecule: ``pdb``, else ``model``'s, else the packaged alanine dipeptide."""
    import torch

    from ..flows.generator import BoltzmannGenerator
    from ..md.molecule import load_molecule
    from ..md.systems import alanine_dipeptide_pdb, available_platforms, classical_system
    from ..potential import FlowPotential, export

    torch.set_num_threads(threads)
    wanted, platforms = list(platforms), [p for p in platforms if p in available_platforms()]
    if not platforms:
        raise SystemExit(f"none of {wanted} is available; available: {available_platforms()}")
    reference = "Reference" if "Reference" in platforms else platforms[0]
    if pdb is None and model is None:
        pdb = alanine_dipeptide_pdb()
    molecule = load_molecule(pdb, model=model)
    topology = molecule.topology
    x0 = np.asarray(molecule.start_structure(), dtype=np.float64)
    print(f"smoothflow bench speed: molecule of {molecule.source} ({molecule.n_atoms} atoms), {steps} steps x {repeats} repeats "
          f"(+{warmup} warm-up), torch threads {threads}, platforms {platforms}")

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(SEED)
        generators = {kind: BoltzmannGenerator.from_topology(topology, kind=kind).double().eval()
                      for kind in ("smooth", "spline")}
        paths = {name: os.path.join(tmp, f"{name}.pt") for name in ("smooth64", "smooth32", "smooth64-autograd",
                                                                      "spline64")}
        export(generators["smooth"], paths["smooth64"])
        export(generators["smooth"], paths["smooth32"], dtype=torch.float32)
        export(generators["smooth"], paths["smooth64-autograd"], analytic_gradient=False)
        export(generators["spline"], paths["spline64"])
        n_params = generators["smooth"].n_parameters()

        # -- batch-1 energy+force outside OpenMM
        outside: Dict[str, Any] = {}
        print(f"\nbatch-1 energy+force outside OpenMM (float64, {n_params:,} parameters):")
        calls = energy_force_calls(generators["smooth"], {"scripted": paths["smooth64"],
                                                          "scripted-autograd": paths["smooth64-autograd"]}, x0)
        calls.update({f"spline/{k}": v for k, v in energy_force_calls(
            generators["spline"], {"scripted": paths["spline64"]}, x0).items()})
        for name, call in calls.items():
            entry = dict(time_call(call), profiler_events=count_ops(call))
            name = name if name.startswith("spline") else f"smooth/{name}"
            outside[name] = entry
            print(f"  {name:<24} {entry['ms']:7.2f} ms (best {entry['best_ms']:.2f})  "
                  f"{entry['profiler_events']:6d} profiler events")

        # -- MD
        jobs = []
        for plat in platforms:
            jobs.append(("classical", "openmm", plat, "-", lambda: classical_system(topology)))
            for key, dtype in (("smooth64", "float64"), ("smooth32", "float32")):
                jobs.append(("smooth", "torchforce", plat, dtype,
                             lambda key=key: FlowPotential(paths[key]).createSystem(topology)))
        jobs.append(("smooth", "tf-autograd", reference, "float64",
                     lambda: FlowPotential(paths["smooth64-autograd"]).createSystem(topology)))
        compiled: List[Any] = []  # one compiled System (torch.compile per generator), reused by the check

        def compiled_system():
            if not compiled:
                compiled.append(FlowPotential(paths["smooth64"]).createSystem(topology, backend="compiled"))
            return compiled[0]

        if not skip_compiled:
            jobs.append(("smooth", "compiled", "Reference", "float64", compiled_system))
        aoti: Dict[str, Any] = {}  # dtype -> (System, AOTIEnergy); each package built once per model (cached on disk)

        def aoti_name(dtype: str) -> str:  # "aoti" for float64 (the rows' names before float32), "aoti-float32"
            return "aoti" + ("" if dtype == "float64" else f"-{dtype}")

        def aoti_system(dtype: str = "float64"):
            if dtype not in aoti:
                potential = FlowPotential(paths["smooth64"])
                precision = "single" if dtype == "float32" else "double"
                start = time.perf_counter()
                system = potential.createSystem(topology, backend="aoti", precision=precision)
                print(f"  (aoti {dtype} package ready after {time.perf_counter() - start:.0f} s)", flush=True)
                aoti[dtype] = (system, potential._aoti[potential.dtype_of(precision)])
            return aoti[dtype][0]

        if not skip_aoti:
            for dtype in ("float64", "float32"):
                jobs.append(("smooth", "aoti", "Reference", dtype, lambda dtype=dtype: aoti_system(dtype)))
        jobs.append(("spline", "torchforce", reference, "float64",
                     lambda: FlowPotential(paths["spline64"]).createSystem(topology)))
        if model is not None:  # the given model itself
            for plat in platforms:
                jobs.append(("model", "torchforce", plat, "file", lambda: FlowPotential(model).createSystem(topology)))
        if not skip_compiled:
            print("\nnote: torch.compile of the paper-size model takes minutes on a busy machine with a cold "
                  "inductor cache (its 'setup s' below: Context + first force); later runs reuse the cache")
        rows: List[Dict[str, Any]] = []
        print("\nMD (Langevin 300 K, 1 fs; torchforce: the export's hand-written force pass, tf-autograd: the "
              "same export with autograd forces):")
        for name, backend, plat, dtype, build in jobs:
            row: Dict[str, Any] = dict(potential=name, backend=backend, platform=plat, dtype=dtype)
            try:
                row.update(md_speed(build(), x0, plat, steps, repeats, warmup, threads))
            except Exception as exc:  # a failing backend is reported, the others still run
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)

        for dtype, (_, energy) in aoti.items():  # the aoti packages' batch-1 energy+force outside OpenMM (numpy)
            name = "smooth/" + aoti_name(dtype)
            outside[name] = time_call(lambda energy=energy: energy(x0))
            print(f"\n  {name + ' (outside OpenMM)':<30} {outside[name]['ms']:7.3f} ms (best {outside[name]['best_ms']:.3f})")

        # -- compiled and aoti backends vs TorchForce (float64) at the same positions
        check: Dict[str, Any] = {}
        built = {"compiled": compiled_system if compiled else None}
        built.update({aoti_name(d): (lambda d=d: aoti_system(d)) for d in aoti})
        rng = np.random.default_rng(SEED)
        frames = [x0, x0 + 0.005 * rng.standard_normal(x0.shape)]
        for backend, system in built.items():
            if system is None:
                continue
            check[backend] = {}
            for i, x in enumerate(frames):
                e_tf, f_tf = single_point(FlowPotential(paths["smooth64"]).createSystem(topology), x)
                e_c, f_c = single_point(system(), x)
                check[backend][f"positions_{i}"] = dict(energy_kjmol=e_tf, energy_abs_diff=abs(e_c - e_tf),
                                                        force_max_abs_diff=float(np.abs(f_c - f_tf).max()),
                                                        force_max_abs=float(np.abs(f_tf).max()))
            worst_e = max(c["energy_abs_diff"] for c in check[backend].values())
            worst_f = max(c["force_max_abs_diff"] for c in check[backend].values())
            print(f"\n{backend} vs TorchForce (float64 export, Reference, {len(frames)} configurations): max |dE| = "
                  f"{worst_e:.2e} kJ/mol, max |dF| = {worst_f:.2e} kJ/mol/nm")

    print("\n" + format_table(rows))
    ratios = step_ratios(rows, reference)
    if ratios:
        print(f"\nfastest flow row: {ratios['fastest_flow']} at {ratios['fastest_flow_ms']:.3f} ms/step = "
              f"{ratios['fastest_vs_classical']:.1f}x classical {reference}; TorchForce {ratios['torchforce_ms']:.3f} "
              f"ms/step = {ratios['torchforce_vs_classical']:.1f}x")
    result = dict(protocol=dict(steps=steps, repeats=repeats, warmup=warmup, threads=threads,
                                platforms=platforms, integrator="LangevinMiddle 300 K 1/ps 1 fs",
                                model="paper-size, random weights (from_topology)", n_parameters=n_params,
                                molecule=molecule.source, atoms=molecule.n_atoms, timed_model=model),
                  machine=dict(processor=platform_module.processor() or platform_module.machine(),
                               cpu_count=os.cpu_count(), torch=torch.__version__),
                  rows=rows, ratios=ratios, outside_openmm=outside, backend_check=check)
    return result
