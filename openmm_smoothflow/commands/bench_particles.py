"""``smoothflow bench particles``: DW4 / LJ13 flows in OpenMM NVE vs the exact potentials, Kish ESS, speed."""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--dw4-model", default=None, help="exported DW4 flow (default: the shipped one)")
    parser.add_argument("--lj13-model", default=None, help="exported LJ13 flow (default: the shipped one)")
    parser.add_argument("--dw4-data", default=None, help=".npz from `smoothflow particles simulate` (test starts)")
    parser.add_argument("--lj13-data", default=None)
    parser.add_argument("--systems", default="dw4,lj13", help="comma-separated subset of dw4,lj13")
    parser.add_argument("--starts", type=int, default=3, help="NVE runs per potential (test configurations)")
    parser.add_argument("--dw4-steps", type=int, default=1000)
    parser.add_argument("--lj13-steps", type=int, default=200)
    parser.add_argument("--dt", type=float, default=0.01, help="time step (ps)")
    parser.add_argument("--dw4-ess-samples", type=int, default=2000)
    parser.add_argument("--lj13-ess-samples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench-particles", help="output directory (particles.json, figures)")


def _fmt(results) -> str:
    rows = ["| system | potential | std E_tot / DOF (kT) | drift (kT / DOF / ps) | max abs dev / DOF (kT) | "
            "blow-ups | ms / step |", "|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for kind in ("exact", "flow"):
            r = res[kind]
            rows.append(f"| {name} | {kind} | {r['std_etot_per_dof_kT']:.2e} | {r['drift_kT_per_dof_per_ps']:.1e} | "
                        f"{r['max_abs_dev_per_dof_kT']:.1e} | {r['blowups']}/{res['n_starts']} | {r['ms_per_step']:.1f} |")
    for name, res in results.items():
        if "ess" in res:
            e = res["ess"]
            rows.append(f"{name}: Kish ESS {100 * e['kish_ess_fraction']:.1f}% of {e['n']} flow samples "
                        f"(reweighted to the exact energy)")
    return "\n".join(rows)


def run(args) -> int:
    from pathlib import Path

    import torch

    from ..io import packaged
    from ..particles.bench import bench_model, data_figure, figure
    from ..particles.data import load_dataset

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, summaries = {}, {}
    for name in [s.strip() for s in args.systems.split(",") if s.strip()]:
        model = getattr(args, f"{name}_model") or str(packaged(f"particles-{name}.pt"))
        data_path = getattr(args, f"{name}_data")
        if data_path is None:
            raise SystemExit(f"--{name}-data is required (make it with `smoothflow particles simulate --system {name}`)")
        data = load_dataset(data_path)
        summaries[name] = data["summary"]
        results[name] = bench_model(model, data["test"], args.starts, getattr(args, f"{name}_steps"), args.dt,
                                    getattr(args, f"{name}_ess_samples"))
    figure(results, out / "particles-nve.png")
    data_figure(summaries, out / "particles-data.png")
    (out / "particles.json").write_text(json.dumps(results, indent=1))
    print(_fmt(results))
    print(f"wrote {out}/particles.json, {out}/particles-nve.png, {out}/particles-data.png")
    return 0
