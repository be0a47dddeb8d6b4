"""``smoothflow evaluate CHECKPOINT --data FILE``: accuracy metrics and figures of a trained flow
(paper Fig. 3, Fig. SI-4, Table 1).

On held-out frames: NLL (kT), force RMSE (kT/nm per component), FM loss (its square). On flow samples
scored by the classical force field (OpenMM): reverse KL estimate (kT, up to log Z, SI-2.5 energy
cut-off), the fraction of clashing samples (target energy > 1e3 kT), Kish ESS / N, how many samples
left the model's support, and the force RMSE on samples within the data's energy range. Figures:
phi/psi Ramachandran histograms (data vs flow, mdtraj dihedrals), flow vs reference force components,
energy histograms (flow vs target). ``metrics.json`` holds every number.
"""
import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch


def phi_psi(positions: np.ndarray, topology) -> np.ndarray:
    """Backbone (phi, psi) in radians, (frames, 2), with mdtraj."""
    import mdtraj

    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32), mdtraj.Topology.from_openmm(topology))
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    return np.stack([phi[:, 0], psi[:, 0]], axis=1)


def held_out_frames(data, info: Dict[str, Any], data_paths, n_frames: int) -> torch.Tensor:
    """Validation-block indices when ``data_paths`` are the training files, else all frames; then
    ``n_frames`` of them, evenly spaced."""
    from ..training.data import split_blocks

    config = json.loads(info.get("config", "{}")) if isinstance(info.get("config"), str) else {}
    same = config and [str(Path(p).resolve()) for p in config.get("data", [])] == [str(Path(p).resolve()) for p in data_paths]
    if same and config.get("stride", 1) == 1:
        _, idx = split_blocks(len(data.positions), config.get("val_fraction", 0.1), config.get("val_blocks", 10))
        idx = torch.as_tensor(idx)
    else:
        idx = torch.arange(len(data.positions))
    if n_frames and len(idx) > n_frames:
        idx = idx[torch.linspace(0, len(idx) - 1, n_frames).long()]
    return idx


def _is_export(path) -> bool:
    """True for a TorchScript export (``smoothflow export``), False for a training checkpoint."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def evaluate(checkpoint: str, data_paths, out_dir: Path, n_frames: int = 5000, n_samples: int = 5000,
             threads: int = 0, progress: bool = True) -> Dict[str, Any]:
    from .. import plots
    from ..md.systems import alanine_dipeptide_pdb, classical_system, load_pdb
    from ..md.target import OpenMMTarget
    from ..training.checkpoint import load_generator
    from ..training.data import load_md_data
    from ..training.metrics import data_metrics, importance_metrics

    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    if str(checkpoint).endswith(".pt") and _is_export(checkpoint):
        from ..potential import FlowPotential

        potential = FlowPotential(checkpoint)
        training = potential.metadata.get("provenance", {}).get("training_config", {})
        generator, info = potential.generator(), {"config": json.dumps(training)}
    else:
        generator, info = load_generator(checkpoint)
    generator = generator.double().eval()
    data = load_md_data(data_paths)
    idx = held_out_frames(data, info, data_paths, n_frames)
    x = data.positions[idx].double()
    forces_kt = data.forces_kT()[idx].double() if data.forces is not None else None
    metrics: Dict[str, Any] = {"checkpoint": str(checkpoint), "kind": generator.config["kind"],
                               "held_out_frames": int(len(idx))}
    metrics.update({k.replace("val_", ""): v for k, v in data_metrics(generator, x, forces_kt).items()})
    topology = load_pdb(alanine_dipeptide_pdb()).topology

    with torch.no_grad():
        samples, log_q = [], []
        for start in range(0, n_samples, 500):
            xs, lq = generator.sample(min(500, n_samples - start))
            samples.append(xs)
            log_q.append(lq)
        xs, log_q = torch.cat(samples), torch.cat(log_q)
    with OpenMMTarget(classical_system(topology), data.temperature) as target:
        u_samples, f_samples = target.energy_and_force(xs)
    finite = torch.isfinite(u_samples)
    metrics["samples"] = int(n_samples)
    metrics.update({k.replace("val_", ""): v for k, v in importance_metrics(u_samples, log_q).items()})
    metrics["samples_outside"] = generator.count_outside(xs)
    # force RMSE on flow samples (the paper's 46 kT/nm figure), over samples whose target energy lies
    # within the range seen in the MD data: a few clashing samples (1e6 kT) would otherwise dominate
    ok = finite
    if data.energies is not None:
        ok = ok & (u_samples <= float(data.energies_kT()[idx].max()))
    metrics["samples_in_data_energy_range"] = float(ok.double().mean())
    sel = torch.nonzero(ok).flatten()[:2000]
    if len(sel):
        f_flow_samples = generator.force(xs[sel])
        metrics["sample_force_rmse"] = float(((f_flow_samples - f_samples[sel]) ** 2).mean().sqrt())

    out_dir.mkdir(parents=True, exist_ok=True)
    plots.ramachandran({"MD data (held out)": phi_psi(x.numpy(), topology), "flow samples": phi_psi(xs.numpy(), topology)},
                       out_dir / "ramachandran.png")
    if forces_kt is not None:
        plots.force_scatter(forces_kt[:1000].numpy(), generator.force(x[:1000]).detach().numpy(),
                            out_dir / "forces.png", title="held-out frames:")
    with torch.no_grad():
        u_flow_data = generator.energy(x).numpy()
    series = {"flow energy (flow samples)": (-log_q).numpy(), "target energy (flow samples)": u_samples[finite].numpy()}
    if data.energies is not None:
        series["target energy (MD data)"] = data.energies_kT()[idx].numpy()
        series["flow energy (MD data)"] = u_flow_data
    plots.energy_histograms(series, out_dir / "energies.png", title=f"{metrics['kind']} flow")
    from ..io import atomic_write

    with atomic_write(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    return metrics


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (best.pt) or an exported model (.pt)")
    parser.add_argument("--data", nargs="+", required=True, help="MD data .npz (held-out blocks are used "
                        "when these are the training files)")
    parser.add_argument("--frames", type=int, default=5000, help="held-out frames to evaluate")
    parser.add_argument("--samples", type=int, default=5000, help="flow samples for KL / ESS")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="evaluate", help="output directory (metrics.json, PNGs)")


def run(args) -> int:
    metrics = evaluate(args.checkpoint, args.data, Path(args.out), args.frames, args.samples, args.threads)
    for key, value in metrics.items():
        print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    print(f"wrote {args.out}/metrics.json, ramachandran.png, forces.png, energies.png")
    return 0
