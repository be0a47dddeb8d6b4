"""analysis/bonds.py (broken bonds of flow samples) and the NVE input check of analysis/nve.py."""
from pathlib import Path

import numpy as np
import pytest
from openmm import app

from openmm_smoothflow.analysis.bonds import broken_bond_metrics

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def proline():
    pdb = app.PDBFile(str(DATA / "ace-pro-nme.pdb"))
    return pdb.topology, np.asarray(pdb.getPositions(asNumpy=True)._value)


def atom(topology, residue, name):
    return next(a.index for a in topology.atoms() if a.residue.name == residue and a.name == name)


def test_broken_bonds_counted_per_sample_and_type(proline):
    topology, x = proline
    rng = np.random.default_rng(0)
    data = x + 0.002 * rng.standard_normal((50, *x.shape))
    samples = np.repeat(x[None], 10, axis=0)
    cd = atom(topology, "PRO", "CD")
    samples[:3, cd] += [0.2, 0.0, 0.0]         # 3 of 10 samples open the ring (CD moves 0.2 nm)
    samples[9, :] = np.nan                      # a non-finite sample counts as broken
    m = broken_bond_metrics(samples, data, topology)
    assert m["broken_bond_fraction"] == pytest.approx(0.4)
    assert m["broken_bond_fraction_by_type"]["C-C"] == pytest.approx(0.4)    # CG-CD
    assert m["broken_bond_fraction_by_type"]["C-N"] == pytest.approx(0.4)    # N-CD
    assert m["broken_bond_fraction_by_type"]["H-N"] == pytest.approx(0.1)    # only the NaN sample
    assert m["broken_bond_worst"]["fraction"] == pytest.approx(0.4) and "PRO2:" in m["broken_bond_worst"]["bond"]
    # within the data's range + 0.03 nm: nothing broken
    samples[:3, cd] -= [0.19, 0.0, 0.0]
    assert broken_bond_metrics(samples[:9], data, topology)["broken_bond_fraction"] == 0.0


def test_nve_frames_of_another_molecule_are_an_error_not_a_blow_up(proline):
    from openmm_smoothflow.analysis.nve import nve_run
    from openmm_smoothflow.md.systems import classical_system

    topology, x = proline
    with pytest.raises(ValueError, match=r"shape \(22, 3\), the system has 26 particles"):
        nve_run(classical_system(topology), topology, np.zeros((22, 3)), equil_steps=1, nve_steps=2)
    run = nve_run(classical_system(topology), topology, x, equil_steps=5, nve_steps=10)
    assert not run["blown_up"] and run["error"] is None


def test_ramachandran_rows(tmp_path):
    from openmm_smoothflow.analysis import plots

    rng = np.random.default_rng(0)
    rows = {f"ALA{i}": {"MD": rng.uniform(-3, 3, (100, 2)), "flow": rng.uniform(-3, 3, (80, 2))} for i in (2, 3)}
    plots.ramachandran_residues(rows, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
