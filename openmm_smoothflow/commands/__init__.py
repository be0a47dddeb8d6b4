"""The ``smoothflow`` subcommands, one module each (``bench X`` in ``bench_X.py``): the only modules
that parse arguments. Each exposes ``add_arguments(parser)`` and ``run(args) -> int`` and calls the
library below it; ``openmm_smoothflow.cli`` dispatches to them."""
