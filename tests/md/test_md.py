"""md/systems.py and md/sampling.py: the packaged molecule, the classical system, `smoothflow simulate`."""
from __future__ import annotations

import json
import os

import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_smoothflow.md import sampling, systems
from openmm_smoothflow.md.sampling import read_protocol, simulate

SHORT = dict(steps_per_frame=10, equilibration_steps=20, seed=7, progress=False)
ALA2 = systems.alanine_dipeptide_pdb()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    path, dcd = out / "data.npz", out / "traj.dcd"
    result = simulate(ALA2, 3, output=path, dcd=dcd, **SHORT)
    return path, dcd, result


def test_packaged_pdb_and_system():
    pdb = systems.load_pdb(systems.alanine_dipeptide_pdb())
    assert pdb.topology.getNumAtoms() == 22
    assert [r.name for r in pdb.topology.residues()] == ["ACE", "ALA", "NME"]
    system = systems.classical_system(pdb.topology)
    assert system.getNumParticles() == 22
    assert system.getNumConstraints() == 0
    names = {type(f).__name__ for f in system.getForces()}
    assert {"NonbondedForce", "GBSAOBCForce", "HarmonicBondForce"} <= names
    for f in system.getForces():
        if isinstance(f, openmm.NonbondedForce):
            assert f.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    assert systems.classical_system(pdb.topology, constraints="HBonds").getNumConstraints() == 12
    with pytest.raises(ValueError, match="unknown constraints"):
        systems.classical_system(pdb.topology, constraints="bogus")


def test_get_platform_error_lists_available():
    assert systems.get_platform("reference").getName() == "Reference"
    with pytest.raises(ValueError, match="available platforms: .*Reference"):
        systems.get_platform("NoSuchPlatform")


def test_file_keys_dtypes_shapes(run):
    path, _, result = run
    with np.load(path) as d:
        assert {"positions", "forces", "energies", "temperature", "protocol", "elements", "atom_names",
                "molecule_pdb", "bonds"} <= set(d.files)
        assert d["bonds"].shape == (21, 2) and str(d["molecule_pdb"]).count("CONECT") == 22
        assert d["positions"].dtype == np.float32 and d["positions"].shape == (3, 22, 3)
        assert d["forces"].dtype == np.float32 and d["forces"].shape == (3, 22, 3)
        assert d["energies"].dtype == np.float64 and d["energies"].shape == (3,)
        assert float(d["temperature"]) == 300.0
        np.testing.assert_allclose(d["time"], [0.01, 0.02, 0.03])
        assert list(d["elements"][:2]) == ["H", "C"] and len(d["atom_names"]) == 22
        np.testing.assert_array_equal(d["positions"], result["positions"])
        # nm: bonded neighbours are ~0.1 nm apart
        assert 0.09 < np.linalg.norm(d["positions"][0, 0] - d["positions"][0, 1]) < 0.13
    assert float(result["ms_per_step"]) > 0


def test_forces_and_energies_match_openmm(run):
    path, _, _ = run
    with np.load(path) as d:
        pos, forces, energies = d["positions"], d["forces"], d["energies"]
    pdb = systems.load_pdb(ALA2)
    context = openmm.Context(
        systems.classical_system(pdb.topology), openmm.VerletIntegrator(0.001), systems.get_platform("Reference")
    )
    for i in range(len(pos)):
        context.setPositions(pos[i].astype(np.float64) * unit.nanometer)
        state = context.getState(getEnergy=True, getForces=True)
        f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        # positions were stored as float32, so allow for their rounding
        np.testing.assert_allclose(forces[i], f, rtol=1e-3, atol=0.1)
        assert abs(energies[i] - e) < 1e-2


def test_protocol_round_trips(run):
    path, _, _ = run
    protocol = read_protocol(path)
    assert protocol["steps_per_frame"] == 10 and protocol["equilibration_steps"] == 20
    assert protocol["seed"] == 7 and protocol["temperature"] == 300.0
    assert protocol["forcefield"] == ["amber99sbildn.xml", "amber99_obc.xml"]
    assert protocol["nonbonded_method"] == "NoCutoff" and protocol["constraints"] is None
    assert protocol["integrator"] == "LangevinMiddleIntegrator" and protocol["platform"] == "Reference"
    assert protocol["timestep_fs"] == 1.0 and protocol["friction_per_ps"] == 1.0
    with np.load(path) as d:  # a plain string: no pickle needed
        assert json.loads(str(d["protocol"])) == protocol


def test_dcd_readable_by_mdtraj(run):
    md = pytest.importorskip("mdtraj")
    path, dcd, result = run
    traj = md.load_dcd(str(dcd), top=str(systems.alanine_dipeptide_pdb()))
    assert traj.n_frames == 3 and traj.n_atoms == 22
    np.testing.assert_allclose(traj.xyz, result["positions"], atol=1e-5)


def test_seed_reproducible(run):
    _, _, result = run
    again = simulate(ALA2, 3, **SHORT)
    np.testing.assert_array_equal(again["positions"], result["positions"])


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "data.npz"
    out.write_bytes(b"old")

    def broken_savez(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sampling.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        simulate(ALA2, 2, output=out, dcd=tmp_path / "traj.dcd", **SHORT)
    assert out.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["data.npz"]  # no temporary files, no DCD


def test_cli(tmp_path, capsys):
    from openmm_smoothflow.cli import main

    out = tmp_path / "cli.npz"
    argv = ["simulate", "-o", str(out), "-n", "2", "--steps-per-frame", "5", "--equilibration-steps", "0",
            "--no-progress", "--temperature", "310", "--seed", "3"]
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "ms per MD step" in said.out and "simulating the packaged alanine dipeptide" in said.err
    with np.load(out) as d:
        assert d["positions"].shape == (2, 22, 3) and float(d["temperature"]) == 310.0
    assert read_protocol(out)["seed"] == 3
    assert main(["simulate", "-o", str(tmp_path / "x.npz"), "--platform", "Nope"]) == 2
    assert "available platforms" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
