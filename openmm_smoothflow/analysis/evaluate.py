"""Accuracy metrics and figures of a trained flow (paper Fig. 3, Fig. SI-4, Table 1), behind
``smoothflow evaluate``.

On held-out frames: NLL (kT), force RMSE (kT/nm per component), FM loss (its square). On flow samples
scored by the classical force field (OpenMM): reverse KL estimate (kT, up to log Z, SI-2.5 energy
cut-off), the fraction of clashing samples (target energy > 1e3 kT), Kish ESS / N, how many samples
left the model's support, the force RMSE on samples within the data's energy range, and the
fraction of samples that break a topology bond (``analysis/bonds.py``: outside the data's range
+/- 0.03 nm; per bond type too). The molecule is the data's (``md/molecule.py``; ``pdb`` overrides).
Figures: phi/psi Ramachandran histograms of every residue (data vs flow, mdtraj dihedrals), flow vs
reference force components, energy histograms (flow vs target). ``metrics.json`` holds every number.
"""
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..io import atomic_write
from ..units import PathLike


def load_flow(path: PathLike) -> Tuple[Any, Dict[str, Any]]:
    """The generator (float64, eval mode) of a training checkpoint or an exported model, and the
    checkpoint's other entries (for an export: ``config``, the training configuration as JSON)."""
    from ..potential import FlowPotential
    from ..potential.torchscript import is_export
    from ..training.checkpoint import load_generator

    if str(path).endswith(".pt") and is_export(path):
        potential = FlowPotential(path)
        training = potential.metadata.get("provenance", {}).get("training_config", {})
        generator, info = potential.generator(), {"config": json.dumps(training)}
    else:
        generator, info = load_generator(path)
    return generator.double().eval(), info


def held_out_frames(data, info: Dict[str, Any], data_paths, n_frames: int) -> Tensor:
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


def draw_samples(generator, n_samples: int) -> Tuple[Tensor, Tensor, Dict[str, float]]:
    """``n_samples`` exact samples (n, N, 3) nm of the flow's density and their log densities (n,), no
    autograd, and the rejection statistics: with rings the density is the restrained q_R (rejection
    sampling, ``flows.rings``; ``{"acceptance", "log_z", "log_z_se", "draws"}``), else q in chunks
    (acceptance 1, log_z 0): ``generator.sample_restrained``."""
    with torch.no_grad():
        return generator.sample_restrained(n_samples)


def sample_metrics(generator, xs: Tensor, log_q: Tensor, u_samples: Tensor, f_samples: Tensor,
                   max_energy_kt: Optional[float] = None) -> Dict[str, Any]:
    """Metrics of flow samples ``xs`` with log densities ``log_q`` scored by the target: energies
    ``u_samples`` (n,) kT and forces ``f_samples`` (n, N, 3) kT/nm.

    The importance metrics (KL, clash fraction, ESS), how many samples left the support, and the force
    RMSE (the paper's 46 kT/nm figure) over at most 2000 samples whose target energy lies at or below
    ``max_energy_kt`` (the MD data's highest, when known): a few clashing samples (1e6 kT) would
    otherwise dominate it.
    """
    from ..bg.reweight import log_weights, normalised_weights
    from ..training.metrics import importance_metrics

    metrics: Dict[str, Any] = {"samples": int(len(xs))}
    metrics.update({k.replace("val_", ""): v for k, v in importance_metrics(u_samples, log_q).items()})
    # the largest normalised importance weight: one sample with most of the weight is what drives a low ESS
    weights = normalised_weights(log_weights(u_samples.numpy(), log_q.numpy()))
    metrics["largest_weight"] = float(weights.max()) if weights.any() else float("nan")
    metrics["samples_outside"] = generator.count_outside(xs)
    ok = torch.isfinite(u_samples)
    if max_energy_kt is not None:
        ok = ok & (u_samples <= max_energy_kt)
    metrics["samples_in_data_energy_range"] = float(ok.double().mean())
    sel = torch.nonzero(ok).flatten()[:2000]
    if len(sel):
        metrics["sample_force_rmse"] = float(((generator.force(xs[sel]) - f_samples[sel]) ** 2).mean().sqrt())
    return metrics


def write_figures(out_dir: Path, generator, topology, x: Tensor, forces_kt: Optional[Tensor], xs: Tensor,
                  log_q: Tensor, u_samples: Tensor, u_data: Optional[Tensor], title: str) -> None:
    """``ramachandran.png`` (held-out frames ``x`` vs samples ``xs``, every residue; none without a
    backbone), ``forces.png`` (flow vs reference
    forces on ``x``, when ``forces_kt`` is given) and ``energies.png`` (flow and target energies of the
    samples and, with ``u_data`` (kT), of the frames) in ``out_dir``."""
    from . import plots
    from .phi_psi import residue_phi_psi

    out_dir.mkdir(parents=True, exist_ok=True)
    data_angles, flow_angles = residue_phi_psi(x.numpy(), topology), residue_phi_psi(xs.numpy(), topology)
    if data_angles:  # peptides: one row per residue
        plots.ramachandran_residues({res: {"MD data (held out)": data_angles[res], "flow samples": flow_angles[res]}
                                     for res in data_angles}, out_dir / "ramachandran.png")
    if forces_kt is not None:
        plots.force_scatter(forces_kt[:1000].numpy(), generator.force(x[:1000]).detach().numpy(),
                            out_dir / "forces.png", title="held-out frames:")
    series = {"flow energy (flow samples)": (-log_q).numpy(),
              "target energy (flow samples)": u_samples[torch.isfinite(u_samples)].numpy()}
    if u_data is not None:
        series["target energy (MD data)"] = u_data.numpy()
        with torch.no_grad():
            series["flow energy (MD data)"] = generator.energy(x).numpy()
    plots.energy_histograms(series, out_dir / "energies.png", title=title)


def evaluate(checkpoint: str, data_paths, out_dir: Path, n_frames: int = 5000, n_samples: int = 5000,
             threads: int = 0, progress: bool = True, pdb: Optional[PathLike] = None,
             seed: int = 0) -> Dict[str, Any]:
    """Metrics of ``checkpoint`` (training checkpoint or export) on ``data_paths`` and ``n_samples`` flow
    samples (drawn with ``seed``: the same seed gives the same samples); writes the figures and
    ``metrics.json`` to ``out_dir`` and returns the metrics. The molecule is the data's (``pdb``: a PDB
    file overriding it)."""
    from ..md.molecule import check_atoms, load_molecule
    from ..md.systems import classical_system
    from ..training.data import load_md_data
    from ..training.metrics import data_metrics
    from ..training.target import OpenMMTarget
    from .bonds import broken_bond_metrics

    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    generator, info = load_flow(checkpoint)
    data = load_md_data(data_paths)
    molecule = load_molecule(pdb, data=data_paths)
    check_atoms(molecule, data.n_atoms, "the data")
    check_atoms(molecule, generator.zmatrix.n_atoms, f"the flow of {checkpoint}")
    idx = held_out_frames(data, info, data_paths, n_frames)
    x = data.positions[idx].double()
    forces_kt = data.forces_kT()[idx].double() if data.forces is not None else None
    u_data = data.energies_kT()[idx] if data.energies is not None else None
    metrics: Dict[str, Any] = {"checkpoint": str(checkpoint), "kind": generator.config["kind"],
                               "molecule": molecule.source, "atoms": molecule.n_atoms,
                               "held_out_frames": int(len(idx))}
    metrics.update({k.replace("val_", ""): v for k, v in data_metrics(generator, x, forces_kt).items()})
    topology = molecule.topology
    with torch.random.fork_rng():  # seeded samples, the caller's random state untouched
        torch.manual_seed(seed)
        xs, log_q, rejection = draw_samples(generator, n_samples)
    metrics.update({"seed": seed, "ring_acceptance": rejection["acceptance"], "ring_log_z": rejection["log_z"],
                    "ring_log_z_se": rejection["log_z_se"]})
    with OpenMMTarget(classical_system(topology), data.temperature) as target:
        u_samples, f_samples = target.energy_and_force(xs)
    metrics.update(sample_metrics(generator, xs, log_q, u_samples, f_samples,
                                  float(u_data.max()) if u_data is not None else None))
    metrics.update(broken_bond_metrics(xs.numpy(), data.positions.numpy(), topology))
    write_figures(out_dir, generator, topology, x, forces_kt, xs, log_q, u_samples, u_data, f"{metrics['kind']} flow")
    with atomic_write(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    return metrics
