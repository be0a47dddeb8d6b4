"""``smoothflow export CHECKPOINT -o model.pt``: a training checkpoint as ONE TorchScript model file.

The export carries its molecule (``md/molecule.py``): the PDB text of the training data's molecule
(or of ``--pdb``), so that ``smoothflow md`` and ``bench speed`` need no molecule flag.
"""
import json


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (.pt) written by `smoothflow train`")
    parser.add_argument("-o", "--output", required=True, help="TorchScript model file to write")
    parser.add_argument("--float32", action="store_true", help="compute in float32 instead of float64")
    parser.add_argument("--pdb", default=None, help="the molecule to store in the model (default: the "
                        "molecule of the training data)")


def molecule_for(generator, checkpoint, pdb=None):
    """The PDB text of the molecule of ``checkpoint`` (or ``pdb``) for the export's metadata, checked
    against the generator's atoms and bonds; None (with a note) when it has no start structure."""
    from ..md.molecule import bond_array, from_model, load_molecule, pdb_text

    molecule = load_molecule(pdb) if pdb is not None else from_model(checkpoint)
    zmatrix = generator.zmatrix
    names = [a.name for a in molecule.topology.atoms()]
    if molecule.n_atoms != zmatrix.n_atoms or (zmatrix.atom_names is not None and names != list(zmatrix.atom_names)):
        raise ValueError(f"the molecule of {molecule.source} ({molecule.n_atoms} atoms) is not the one the flow "
                         f"was trained on ({zmatrix.n_atoms} atoms{', other atom names' if molecule.n_atoms == zmatrix.n_atoms else ''})")
    if zmatrix.graph_bonds is not None and bond_array(molecule.topology).tolist() != sorted(
            sorted([int(a), int(b)]) for a, b in zmatrix.graph_bonds):
        raise ValueError(f"the molecule of {molecule.source} has other bonds than the flow's")
    if molecule.xyz is None:
        print(f"note: {molecule.source} gives no start structure; `smoothflow md` will need --pdb")
        return None
    return pdb_text(molecule.topology, molecule.xyz)


def run(args) -> int:
    import torch

    from ..potential import export
    from ..training.checkpoint import load_generator

    import os
    from pathlib import Path

    from ..errors import UsageError

    source, output = Path(args.checkpoint), Path(args.output)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    if output.resolve() == source.resolve() or (output.exists() and os.path.samefile(output, source)):
        raise UsageError(f"-o {output} is the input checkpoint: choose another output file")
    if output.is_dir():
        raise UsageError(f"-o {output} is a directory: give a file name, e.g. {output / 'model.pt'}")
    generator, info = load_generator(args.checkpoint)
    provenance = dict(info.get("provenance", {}))
    if "config" in info:  # the training configuration: data, split, loss weights
        provenance["training_config"] = json.loads(info["config"])
    molecule_pdb = molecule_for(generator, source, getattr(args, "pdb", None))
    meta = export(generator, args.output, provenance=provenance,
                  dtype=torch.float32 if args.float32 else torch.float64, molecule_pdb=molecule_pdb)
    print(f"wrote {args.output}: {meta['kind']} flow, {meta['atom_count']} atoms, {meta['temperature']} K, "
          f"{meta['n_parameters']:,} parameters" + (", with its molecule" if molecule_pdb else ""))
    return 0
