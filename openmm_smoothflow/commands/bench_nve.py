"""``smoothflow bench nve``: energy conservation in NVE (paper Fig. 4), flows vs the classical force field,
on the molecule the data carry (``--pdb`` overrides)."""
from __future__ import annotations

from pathlib import Path
from .arguments import non_negative_int, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FILE",
                        help="an exported flow to compare (repeatable), e.g. smooth=smooth.pt")
    parser.add_argument("--data", required=True, help=".npz data file: starting frames are taken from it")
    parser.add_argument("--pdb", default=None, help="PDB file of the molecule (default: the one the data carry)")
    parser.add_argument("--frames", type=positive_int, default=10, help="number of starting frames (the first ones)")
    parser.add_argument("--equil-steps", type=non_negative_int, default=1000)
    parser.add_argument("--nve-steps", type=positive_int, default=5000)
    parser.add_argument("--platform", default="Reference")
    parser.add_argument("--no-classical", action="store_true", help="skip amber99sbildn + OBC")
    parser.add_argument("--out", default="bench-nve", help="output directory (nve.json, nve.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..analysis.nve import compare, format_table
    from ..md.molecule import check_atoms, load_molecule
    from ..md.systems import classical_system
    from ..potential import FlowPotential
    from ..training.data import load_md_data

    data = load_md_data([args.data])
    pdb = load_molecule(args.pdb, data=args.data)
    check_atoms(pdb, data.n_atoms, f"the frames of {args.data}")
    frames = data.positions[: args.frames].numpy()
    potentials = {} if args.no_classical else {"classical": classical_system(pdb.topology)}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            name, path = Path(spec).stem, spec
        potentials[name] = FlowPotential(path).createSystem(pdb.topology)
    summary = compare(potentials, pdb.topology, frames, Path(args.out), equil_steps=args.equil_steps,
                      nve_steps=args.nve_steps, platform=args.platform, progress=not args.no_progress)
    print(format_table(summary))
    print(f"wrote {args.out}/nve.json and {args.out}/nve.png")
    return 0
