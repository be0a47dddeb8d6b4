"""Particle-flow benchmark: NVE with the flow vs the exact potential, Kish ESS, ms per MD step.

For each model (DW4, LJ13): the same ``n_starts`` test configurations and Maxwell-Boltzmann velocities
are integrated with velocity Verlet in OpenMM under the exact potential and under the exported flow
(TorchForce). Reported per potential: std of E_tot per degree of freedom (kT), linear drift (kT per
DOF per ps), the largest |E_tot(t) - E_tot(0)| per DOF, blow-ups (non-finite or > 1 kT per DOF),
ms per MD step; and the Kish ESS of flow samples reweighted to the exact energy. Writes JSON and a
figure (E_tot(t) - E_tot(0) per DOF against time).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..io import atomic_write
from ..units import PathLike
from .md import flow_samples_ess, flow_system, no_fusion, maxwell_boltzmann, nve, nve_stats
from .systems import get_system


def _mean(runs, key):
    vals = [r[key] for r in runs if np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else float("nan")


def bench_model(model: PathLike, test_positions: np.ndarray, n_starts: int = 3, n_steps: int = 200,
                dt_ps: float = 0.01, ess_samples: int = 500, seed: int = 0, progress: bool = True) -> Dict[str, Any]:
    """NVE (flow vs exact), Kish ESS and speed for one exported model; arrays kept for the figure."""
    from .export import eager_flow, load_particle_model

    meta = json.loads(load_particle_model(model).metadata)
    system = get_system(meta["system"])
    dof = system.dof
    exact_sys, flow_sys = system.openmm_system(), flow_system(system, model)
    out: Dict[str, Any] = {"system": system.name, "model": str(model), "dof": dof, "dt_ps": dt_ps,
                           "n_steps": n_steps, "n_starts": n_starts, "runs": []}
    with no_fusion():
        for s in range(n_starts):
            pos = system.to_nm(test_positions[s])
            vel = maxwell_boltzmann(system, seed + s)
            run = {}
            for name, omm_sys in (("exact", exact_sys), ("flow", flow_sys)):
                traj = nve(omm_sys, system, pos, vel, dt_ps, n_steps)
                run[name] = {**nve_stats(traj, dof), "time_ps": traj["time_ps"].tolist(),
                             "etot_dev_per_dof": ((traj["etot"] - traj["etot"][0]) / dof).tolist(),
                             "max_abs_z_nm": traj["max_abs_z_nm"]}
                if progress:
                    r = run[name]
                    print(f"[{system.name}] start {s} {name}: std E_tot/dof {r['std_etot_per_dof_kT']:.2e} kT, "
                          f"drift {r['drift_kT_per_dof_per_ps']:.2e} kT/dof/ps, {r['ms_per_step']:.1f} ms/step"
                          f"{'  BLOW-UP' if r['blowup'] else ''}", flush=True)
            out["runs"].append(run)
    for name in ("exact", "flow"):
        rs = [r[name] for r in out["runs"]]
        out[name] = {"std_etot_per_dof_kT": _mean(rs, "std_etot_per_dof_kT"),
                     "drift_kT_per_dof_per_ps": _mean(rs, "drift_kT_per_dof_per_ps"),
                     "max_abs_dev_per_dof_kT": _mean(rs, "max_abs_dev_per_dof_kT"),
                     "blowups": int(sum(r["blowup"] for r in rs)), "ms_per_step": _mean(rs, "ms_per_step"),
                     "mean_ekin_per_dof_kT": _mean(rs, "mean_ekin_per_dof_kT")}
    if ess_samples > 0:
        t0 = time.time()
        out["ess"] = flow_samples_ess(eager_flow(model), system, ess_samples, seed=seed)
        out["ess"]["seconds"] = time.time() - t0
        if progress:
            print(f"[{system.name}] Kish ESS {out['ess']['kish_ess_fraction']:.3f} of {ess_samples} samples", flush=True)
    return out


def figure(results: Dict[str, Dict[str, Any]], path: PathLike) -> None:
    """E_tot(t) - E_tot(0) per DOF (kT) against time (ps), flow vs exact, one panel per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        for s, run in enumerate(res["runs"]):
            for kind, style in (("exact", "--"), ("flow", "-")):
                r = run[kind]
                ax.plot(r["time_ps"], r["etot_dev_per_dof"], style, color=f"C{s}",
                        label=f"{kind} potential, start {s}")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("(E_tot(t) - E_tot(0)) / DOF  (kT)")
        ax.set_title(f"{name.upper()} NVE, dt = {res['dt_ps'] * 1000:.0f} fs, {res['dof']} DOF")
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def data_figure(summaries: Dict[str, Dict[str, Any]], path: PathLike) -> None:
    """Energy histograms of the first and second half of each MCMC production run (equilibrium check)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(5 * len(summaries), 3.6), squeeze=False)
    for ax, (name, s) in zip(axes[0], summaries.items()):
        bins = np.asarray(s["histogram_bins"])
        centres = 0.5 * (bins[1:] + bins[:-1])
        ax.step(centres, s["histogram_first_half"], where="mid", label="first half of production")
        ax.step(centres, s["histogram_second_half"], where="mid", label="second half of production")
        ax.set_xlabel("reduced energy u (kT)")
        ax.set_ylabel("density (1/kT)")
        ax.set_title(f"{name.upper()}: tau = {s['tau_energy_steps']:.0f} steps, {s['n_decorrelated']} samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
