"""Any molecule, end to end: simulate -> train -> export -> md -> evaluate -> bench nve on capped residues
other than alanine dipeptide, with no molecule flag after `simulate` (the data and the model carry it).

Tiny settings: these runs check that every command finds and uses the molecule, not the physics of the
flows (a flow trained for 64 steps is no potential to trust beyond a few hundred MD steps).
The three together take about a minute (17-21 s each on the 2-core machine at moderate load).
"""
import json
from pathlib import Path

import pytest
import torch

from openmm_smoothflow import cli

DATA = Path(__file__).resolve().parent.parent / "data"
TINY = '{"hidden": [16, 16], "n_torsion_layers": 2, "n_ic_layers": 2}'


@pytest.mark.parametrize("name, atoms", [("ace-val-nme", 28), ("ace-pro-nme", 26), ("ace-ala-ala-nme", 32)])
def test_cli_pipeline_without_a_molecule_flag(name, atoms, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        assert cli.main(list(argv)) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    out = run("simulate", "--pdb", str(DATA / f"{name}.pdb"), "-o", "data.npz", "-n", "300", "--steps-per-frame", "50",
              "--equilibration-steps", "500", "--seed", "1", "--no-progress")
    assert f"300 frames of {atoms} atoms" in out
    run("train", "--data", "data.npz", "--out", "run", "--model", TINY, "--epochs", "8", "--batch-size", "32",
        "--lr", "0.005", "--lr-decay", "1", "--val-kl-samples", "0", "--threads", "1", "--no-progress")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["pdb"] == "data.npz"  # the data's molecule
    assert "with its molecule" in run("export", "run/best.pt", "-o", "flow.pt")
    out = run("md", "flow.pt", "--steps", "100", "--check-every", "50", "--seed", "1", "--no-progress")
    assert "ran 100 steps" in out and "3 health checks passed" in out
    run("evaluate", "run/best.pt", "--data", "data.npz", "--frames", "50", "--samples", "50", "--threads", "1",
        "--out", "evaluate", "--no-progress")
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert metrics["atoms"] == atoms and metrics["samples"] == 50
    assert 0.0 <= metrics["broken_bond_fraction"] <= 1.0 and "C-H" in metrics["broken_bond_fraction_by_type"]
    if name == "ace-pro-nme":  # a ring: samples are exact draws of the restrained density (rejection)
        assert 0.0 < metrics["ring_acceptance"] <= 1.0 and metrics["ring_log_z"] <= 0.0
        from openmm_smoothflow.training.checkpoint import load_generator

        rings = load_generator(tmp_path / "run" / "best.pt")[0].rings  # the trainer fitted the flat bottom
        assert rings.n_pairs > 0 and bool(torch.isfinite(rings.hi).all()) and bool((rings.lo > 0.1).all())
    else:
        assert metrics["ring_acceptance"] == 1.0 and metrics["ring_log_z"] == 0.0
    assert (tmp_path / "evaluate" / "ramachandran.png").read_bytes()[:4] == b"\x89PNG"
    out = run("bench", "nve", "--data", "data.npz", "--model", "flow=flow.pt", "--frames", "1", "--equil-steps", "20",
              "--nve-steps", "50", "--out", "nve", "--no-progress")
    summary = json.loads((tmp_path / "nve" / "nve.json").read_text())["summary"]
    assert summary["classical"]["runs"] == 1 and summary["classical"]["blown_up"] == 0  # real runs, no shape error
    assert summary["flow"]["runs"] == 1


def test_ramachandran_rows_per_residue():
    import numpy as np
    from openmm import app

    from openmm_smoothflow.analysis.phi_psi import phi_psi, residue_phi_psi

    pdb = app.PDBFile(str(DATA / "ace-ala-ala-nme.pdb"))
    x = np.asarray(pdb.getPositions(asNumpy=True)._value)[None]
    angles = residue_phi_psi(x, pdb.topology)
    assert list(angles) == ["ALA2", "ALA3"] and all(a.shape == (1, 2) for a in angles.values())
    assert np.all(np.abs(np.concatenate(list(angles.values()))) <= np.pi)
    np.testing.assert_array_equal(phi_psi(x, pdb.topology), angles["ALA2"])
    assert not np.allclose(angles["ALA2"], angles["ALA3"])  # two different residues' dihedrals


def test_other_molecules_errors_are_named(tmp_path, capsys):
    """A data file without its molecule, and frames of another molecule: one-line errors, exit code 2,
    never an alanine-dipeptide default and never a "blown-up" NVE run."""
    import numpy as np

    from openmm_smoothflow.errors import EXIT_USAGE
    from openmm_smoothflow.io import packaged

    with np.load(packaged("ala2-frames.npz")) as npz:
        np.savez(tmp_path / "old.npz", positions=npz["positions"][:20], forces=npz["forces"][:20],
                 energies=npz["energies"][:20], temperature=npz["temperature"])
    for argv in (["bench", "nve", "--data", str(tmp_path / "old.npz"), "--frames", "1", "--no-progress"],
                 ["train", "--data", str(tmp_path / "old.npz"), "--out", str(tmp_path / "run"), "--batch-size", "8",
                  "--no-progress"]):
        assert cli.main(argv) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "old.npz carries no molecule" in err and "--pdb" in err
    argv = ["bench", "nve", "--data", str(packaged("ala2-frames.npz")), "--pdb", str(DATA / "ace-val-nme.pdb"),
            "--frames", "1", "--no-progress", "--out", str(tmp_path / "nve")]
    assert cli.main(argv) == EXIT_USAGE
    assert "has 28 atoms, but the frames of" in capsys.readouterr().err


def test_md_and_export_molecule_errors(tmp_path, capsys):
    """md of a model that stores no start structure says to give --pdb; export --pdb of another
    molecule is refused."""
    import torch
    from openmm import app

    from helpers import TINY_MODEL
    from openmm_smoothflow.errors import EXIT_USAGE
    from openmm_smoothflow.flows.generator import BoltzmannGenerator
    from openmm_smoothflow.potential import export
    from openmm_smoothflow.training.checkpoint import generator_state, save_checkpoint

    topology = app.PDBFile(str(DATA / "ace-val-nme.pdb")).topology
    torch.manual_seed(0)
    generator = BoltzmannGenerator.from_topology(topology, **TINY_MODEL).double()
    export(generator, tmp_path / "bare.pt")
    assert cli.main(["md", str(tmp_path / "bare.pt"), "--steps", "10", "--no-progress"]) == EXIT_USAGE
    assert "bare.pt carries no start structure: give the molecule's PDB file with --pdb" in capsys.readouterr().err
    assert cli.main(["md", str(tmp_path / "bare.pt"), "--pdb", str(DATA / "ace-val-nme.pdb"), "--steps", "10",
                     "--check-every", "10", "--no-progress"]) == 0
    save_checkpoint(tmp_path / "best.pt", {"generator": generator_state(generator)})
    assert cli.main(["export", str(tmp_path / "best.pt"), "-o", str(tmp_path / "m.pt"),
                     "--pdb", str(DATA / "ace-pro-nme.pdb")]) == EXIT_USAGE
    assert "is not the one the flow was trained on (28 atoms)" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "best.pt"), "-o", str(tmp_path / "m.pt"),
                     "--pdb", str(DATA / "ace-val-nme.pdb")]) == 0
    assert "with its molecule" in capsys.readouterr().out
