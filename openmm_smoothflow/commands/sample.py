"""``smoothflow sample MODEL``: Boltzmann-generator sampling of a molecule in OpenMM (``bg/``):
flow-MCMC (independence Metropolis-Hastings with flow proposals, interleaved with Langevin MD of the
classical force field), the reweighting estimates of the proposals, and optionally reference MD
frames for comparison. Writes ``sample.json``, ``chain.npz``, ``ramachandran.png``, ``populations.png``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .arguments import non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported model (.pt from `smoothflow export`) or a training checkpoint")
    parser.add_argument("--pdb", default=None, help="PDB (or data .npz carrying the molecule) of the start "
                        "structure (default: the molecule the model carries)")
    parser.add_argument("--cycles", type=positive_int, default=1000,
                        help="cycles of (MD steps, MH tests), one recorded state per cycle (default %(default)s)")
    parser.add_argument("--md-steps", type=non_negative_int, default=100,
                        help="Langevin MD steps per cycle (default %(default)s; 0: flow moves only)")
    parser.add_argument("--mh-per-cycle", type=non_negative_int, default=10,
                        help="MH tests with flow proposals per cycle (default %(default)s; 0: plain MD)")
    parser.add_argument("--batch", type=positive_int, default=256, help="flow proposals drawn and scored at once")
    parser.add_argument("--states", default="basins", choices=["basins", "phi"],
                        help="basins: beta / alpha_R / phi>0; phi: phi<0 / phi>0 (default %(default)s)")
    parser.add_argument("--temperature", type=positive_float, default=None, help="K (default: the model's)")
    parser.add_argument("--timestep", type=positive_float, default=1.0, help="fs (default %(default)s)")
    parser.add_argument("--friction", type=positive_float, default=1.0, help="1/ps (default %(default)s)")
    parser.add_argument("--equilibration-steps", type=non_negative_int, default=1000,
                        help="MD steps after minimisation, before the chain (default %(default)s)")
    parser.add_argument("--max-seconds", type=positive_float, default=None, help="stop the chain after this wall time")
    parser.add_argument("--max-cpu-seconds", type=positive_float, default=None,
                        help="stop the chain after this much CPU time of the process (a fair budget on a busy machine)")
    parser.add_argument("--reference", nargs="+", default=None,
                        help="MD data .npz (positions) to compare with: populations and Ramachandran")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="OpenMM worker processes for the proposals' energies (default 0: in process)")
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (default %(default)s)")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="sample", help="output directory (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _molecule(pdb, model, generator):
    """Topology and start structure (N, 3) nm: ``--pdb`` when given, else the model's own molecule."""
    from ..md.molecule import check_atoms, load_molecule

    molecule = load_molecule(pdb, model=model)
    check_atoms(molecule, len(generator.elements), f"the flow of {model}")
    elements = [a.element.symbol if a.element is not None else "" for a in molecule.topology.atoms()]
    if elements != list(generator.elements):
        raise ValueError(f"the elements of {molecule.source} are not those of the flow of {model} (topology order)")
    return molecule.topology, molecule.start_structure(), molecule.source


def _reference(paths, labeller, names, kt, n_atoms):
    import numpy as np

    from ..bg.run import series_summary

    frames = []
    for path in paths:
        with np.load(path) as data:
            if "positions" not in data:
                raise ValueError(f"{path}: no 'positions' array (an MD data file of `smoothflow simulate`)")
            positions = data["positions"]
            if positions.ndim != 3 or positions.shape[1:] != (n_atoms, 3):
                raise ValueError(f"{path}: positions {positions.shape} are not frames of this molecule "
                                 f"({n_atoms} atoms)")
            frames.append(labeller(positions))
    labels = np.concatenate([f[0] for f in frames])
    angles = np.concatenate([f[1] for f in frames])
    summary = series_summary(labels, names, kt, spacing="frames")
    summary["files"] = [str(p) for p in paths]
    return summary, angles


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..analysis.evaluate import load_flow
    from ..analysis.plots import ramachandran
    from ..bg.figure import population_rows, populations_figure
    from ..bg.run import json_clean, sample_molecule
    from ..bg.states import StateLabeller, get_definition
    from ..io import atomic_write
    from ..md.systems import get_platform
    from ..units import kT

    if args.threads:
        torch.set_num_threads(args.threads)
    get_platform(args.platform)  # a clear error before any work
    for path in [args.model] + (args.reference or []):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    generator, _ = load_flow(args.model)
    topology, positions, source = _molecule(args.pdb, args.model, generator)
    temperature = args.temperature or float(generator.temperature)
    states = get_definition(args.states)
    reference = None
    if args.reference:  # read (and checked) before the chain runs
        reference = _reference(args.reference, StateLabeller(topology, states), states.names, kT(temperature),
                               topology.getNumAtoms())
    summary, result = sample_molecule(
        generator, topology, positions, temperature, states, args.cycles, args.md_steps, args.mh_per_cycle,
        args.batch, seed=args.seed, equilibration_steps=args.equilibration_steps, n_workers=args.workers,
        platform=args.platform, timestep_fs=args.timestep, friction=args.friction, max_seconds=args.max_seconds,
        max_cpu_seconds=args.max_cpu_seconds, progress=not args.no_progress)
    summary.update(model=str(args.model), molecule=source,
                   model_temperature=float(generator.temperature))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    panels = {"flow-MCMC chain" if args.mh_per_cycle else "MD": result.features}
    rows = population_rows(summary)
    if reference is not None:
        summary["reference"], panels["reference MD"] = reference
        rows["reference MD"] = summary["reference"]["populations"]
    with atomic_write(out / "sample.json") as tmp:
        tmp.write_text(json.dumps(json_clean(summary), indent=2))
    with atomic_write(out / "chain.npz", suffix=".npz") as tmp:
        np.savez(tmp, labels=result.labels, phi_psi=result.features, accepted=result.accepted,
                 proposal_log_w=result.proposal_log_w, proposal_labels=result.proposal_labels,
                 proposal_phi_psi=result.proposal_features, state_names=np.array(states.names))
    ramachandran(panels, out / "ramachandran.png")
    populations_figure(rows, states.names, out / "populations.png",
                       title=f"{states.name} populations, {temperature:g} K")
    _print(summary, states.names)
    print(f"wrote {out}/sample.json, chain.npz, ramachandran.png, populations.png")
    return 0


def _print(summary, names) -> None:
    chain = summary["chain"]
    line = f"{summary['cycles']} cycles in {summary['wall_s']:.1f} s ({summary['cpu_s']:.1f} s CPU)"
    if summary.get("flow_proposals"):
        line += f"; acceptance {summary['acceptance_rate']:.3f} ({summary['accepted']} of {summary['mh_tests']})"
    print(line)
    blocks = [("chain", chain), ("reweighted", summary.get("reweighting")), ("reference", summary.get("reference"))]
    for label, block in blocks:
        if not block:
            continue
        pops = ", ".join(f"{n} {block['populations'][n]['p']:.4f}" + (f" +- {block['populations'][n]['se']:.4f}"
                         if block["populations"][n]["se"] is not None else "") for n in names)
        print(f"{label:>10}: {pops}")
        for key, value in block["free_energies_kjmol"].items():
            print(f"{'':>10}  F({key}) = " + (f"{value['dF']:.2f} +- {value['se']:.2f} kJ/mol" if value else "n/a"))
