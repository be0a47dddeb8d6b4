"""One-line errors and documented exit codes of `smoothflow` (errors.py): 0 ok, 1 run failed,
2 bad usage or input, 130 interrupted."""
import pytest

from openmm_smoothflow import cli
from openmm_smoothflow.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from openmm_smoothflow.io import packaged

MODEL = str(packaged("ala2-smooth.pt"))


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("smoothflow")]
    assert len(err) == 1, err
    assert err[0].startswith("smoothflow: error: ")
    return err[0]


@pytest.mark.parametrize("args, match", [
    (["--report-every", "0"], "report_every must be a positive integer"),   # looped forever
    (["--steps", "0"], "steps must be a positive integer"),                 # UnboundLocalError
    (["--temperature", "0"], "temperature must be > 0 K"),                  # ran at 300 K
    (["--step", "0"], "time step must be > 0 fs"),
    (["--check-every", "-5"], "check_every must be a positive integer"),
    (["--max-temperature", "-1"], "max_temperature must be > 0"),
    (["--bond-factor", "1.2", "1.5"], "bond_factor must be"),
])
def test_md_arguments_are_validated(args, match, capsys):
    """Reproduction 3."""
    assert cli.main(["md", MODEL, "--no-progress"] + args) == EXIT_USAGE
    assert match in one_error_line(capsys)


def test_md_errors_are_one_line_and_debug_gives_the_traceback(tmp_path, capsys):
    assert cli.main(["md", str(tmp_path / "nope.pt")]) == EXIT_USAGE
    assert one_error_line(capsys) == f"smoothflow: error: smoothflow model file not found: {tmp_path / 'nope.pt'}"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert cli.main(["md", str(bad)]) == EXIT_USAGE
    assert "is not a readable TorchScript model" in one_error_line(capsys)
    assert cli.main(["--debug", "md", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("smoothflow: error:")


def test_md_with_a_training_checkpoint_says_export_it(tmp_path, capsys):
    """Reproduction 6: a training checkpoint passed to md was called "corrupted"."""
    from openmm import app

    from helpers import TINY_MODEL
    from openmm_smoothflow.flows.generator import BoltzmannGenerator
    from openmm_smoothflow.training.checkpoint import generator_state, save_checkpoint

    topology = app.PDBFile(str(packaged("alanine-dipeptide.pdb"))).topology
    save_checkpoint(tmp_path / "best.pt", {"generator": generator_state(BoltzmannGenerator.from_topology(
        topology, **TINY_MODEL))})
    assert cli.main(["md", str(tmp_path / "best.pt")]) == EXIT_USAGE
    assert "is a training checkpoint, not an exported model: run `smoothflow export" in one_error_line(capsys)


def test_unhealthy_md_exits_1_with_the_reason_and_the_last_good_state(tmp_path, capsys):
    """Reproduction 1 (fast form, a small flow): the run is stopped at the first failed check, exit code 1."""
    import torch
    from openmm import app

    from helpers import TINY_MODEL
    from openmm_smoothflow.flows.generator import BoltzmannGenerator
    from openmm_smoothflow.potential import export

    topology = app.PDBFile(str(packaged("alanine-dipeptide.pdb"))).topology
    torch.manual_seed(0)
    export(BoltzmannGenerator.from_topology(topology, **TINY_MODEL).double(), tmp_path / "flow.pt")
    prefix = tmp_path / "kept"
    rc = cli.main(["md", str(tmp_path / "flow.pt"), "--steps", "60", "--check-every", "30", "--max-energy-jump", "1e-9",
                   "--last-good", str(prefix), "--no-progress"])
    assert rc == EXIT_FAILED
    line = one_error_line(capsys)
    assert line.startswith("smoothflow: error: MD unhealthy at step 30: potential energy jumped")
    assert f"last good state (step 0): {prefix}.pdb, {prefix}.xml" in line
    assert (tmp_path / "kept.pdb").exists() and (tmp_path / "kept.xml").exists()


def test_export_refuses_to_write_over_its_input(tmp_path, capsys):
    """Reproduction 4: `smoothflow export best.pt -o best.pt` replaced the checkpoint."""
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"the checkpoint")
    for output in (checkpoint, tmp_path / "." / "best.pt"):
        assert cli.main(["export", str(checkpoint), "-o", str(output)]) == EXIT_USAGE
        assert "is the input checkpoint" in one_error_line(capsys)
    assert checkpoint.read_bytes() == b"the checkpoint"
    assert cli.main(["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "m.pt")]) == EXIT_USAGE
    assert "checkpoint not found" in one_error_line(capsys)


def test_unexpected_errors_exit_1_with_a_hint(monkeypatch, capsys):
    from openmm_smoothflow.commands import md

    def broken(args):
        raise TypeError("something internal")

    monkeypatch.setattr(md, "run", broken)
    assert cli.main(["md", MODEL]) == EXIT_FAILED
    assert one_error_line(capsys) == ("smoothflow: error: TypeError: something internal "
                                      "(run with --debug for the traceback)")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(md, "run", interrupted)
    assert cli.main(["md", MODEL]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "smoothflow: interrupted"
