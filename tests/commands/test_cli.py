"""The ``smoothflow`` command: every subcommand is one module of ``openmm_smoothflow.commands``."""
import importlib

import pytest

from openmm_smoothflow import cli

SUBCOMMANDS = [[name] for name in cli.COMMANDS] + [["bench", name] for name in cli.BENCHES]


@pytest.mark.parametrize("module", [m for m, _ in [*cli.COMMANDS.values(), *cli.BENCHES.values()]])
def test_every_subcommand_is_a_commands_module(module):
    assert module.startswith("openmm_smoothflow.commands.")
    mod = importlib.import_module(module)
    assert callable(mod.add_arguments) and callable(mod.run)


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_help_of_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: smoothflow " + " ".join(argv) in capsys.readouterr().out


def test_bench_inverse_writes_the_table(tmp_path, capsys):
    import json

    out = tmp_path / "inverse.json"
    rc = cli.main(["bench", "inverse", "--dims", "2", "8", "--bins", "2", "8", "--batch-size", "4", "--spline-bins",
                   "4", "--hidden", "8", "--repeats", "2", "--min-time", "0", "--dtype", "float64", "--no-progress",
                   "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [row["dim"] for row in data["table"]] == [2, 8]
    assert data["table"][0]["inversion"]["K_opt"] in (2, 8) and data["config"]["batch_size"] == 4
    assert "Kopt" in capsys.readouterr().out


def test_unknown_subcommand_fails():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
