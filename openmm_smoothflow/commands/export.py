"""``smoothflow export CHECKPOINT -o model.pt``: a training checkpoint as ONE TorchScript model file."""
import json


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (.pt) written by `smoothflow train`")
    parser.add_argument("-o", "--output", required=True, help="TorchScript model file to write")
    parser.add_argument("--float32", action="store_true", help="compute in float32 instead of float64")


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
    meta = export(generator, args.output, provenance=provenance,
                  dtype=torch.float32 if args.float32 else torch.float64)
    print(f"wrote {args.output}: {meta['kind']} flow, {meta['atom_count']} atoms, {meta['temperature']} K, "
          f"{meta['n_parameters']:,} parameters")
    return 0
