"""training/data.py: loading MD data files, block splits, units."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from openmm_smoothflow.training.data import MDData, load_md_data, split_blocks
from openmm_smoothflow.units import energies_to_kT, forces_to_kT, kT


def _write(path, frames=10, atoms=4, temperature=300.0, forces=True, energies=True, offset=0.0):
    rng = np.random.default_rng(len(str(path)))
    arrays = dict(
        positions=(0.1 * rng.normal(size=(frames, atoms, 3)) + offset).astype(np.float32),  # nm
        temperature=np.float64(temperature),
    )
    if forces:
        arrays["forces"] = rng.normal(size=(frames, atoms, 3)).astype(np.float32)
    if energies:
        arrays["energies"] = rng.normal(size=frames)
    np.savez(path, **arrays)
    return arrays


def test_load_concatenate_and_stride(tmp_path):
    a = _write(tmp_path / "a.npz", frames=10)
    b = _write(tmp_path / "b.npz", frames=7, offset=5.0)
    data = load_md_data([tmp_path / "a.npz", tmp_path / "b.npz"])
    assert isinstance(data, MDData) and len(data) == 17 and data.n_atoms == 4
    assert data.positions.dtype == torch.float64 and data.forces.dtype == torch.float64
    np.testing.assert_allclose(data.positions[10:].numpy(), b["positions"])
    np.testing.assert_allclose(data.energies[:10].numpy(), a["energies"])
    assert data.temperature == 300.0
    assert [s[1:] for s in data.sources] == [(0, 10), (10, 7)]
    strided = load_md_data([tmp_path / "a.npz", tmp_path / "b.npz"], stride=3)
    assert len(strided) == 4 + 3
    np.testing.assert_allclose(strided.forces[4].numpy(), b["forces"][0])
    single = load_md_data(str(tmp_path / "a.npz"), require_forces=True)
    assert len(single) == 10
    np.testing.assert_allclose(single.forces_kT().numpy(), a["forces"] / kT(300.0), rtol=1e-6)


def test_missing_forces(tmp_path):
    _write(tmp_path / "good.npz")
    _write(tmp_path / "noforces.npz", forces=False)
    paths = [tmp_path / "good.npz", tmp_path / "noforces.npz"]
    with pytest.raises(ValueError, match="noforces.npz.*forces are required"):
        load_md_data(paths, require_forces=True)
    data = load_md_data(paths)
    assert data.forces is None and data.energies is not None and len(data) == 20


def test_inconsistent_files(tmp_path):
    _write(tmp_path / "a.npz", atoms=4)
    _write(tmp_path / "b.npz", atoms=5)
    _write(tmp_path / "c.npz", temperature=350.0)
    with pytest.raises(ValueError, match="b.npz: 5 atoms"):
        load_md_data([tmp_path / "a.npz", tmp_path / "b.npz"])
    with pytest.raises(ValueError, match="c.npz: temperature 350"):
        load_md_data([tmp_path / "a.npz", tmp_path / "c.npz"])
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_md_data(tmp_path / "missing.npz")
    np.savez(tmp_path / "nopos.npz", forces=np.zeros((2, 4, 3)), temperature=300.0)
    with pytest.raises(ValueError, match="nopos.npz: no 'positions'"):
        load_md_data(tmp_path / "nopos.npz")
    with pytest.raises(ValueError, match="stride"):
        load_md_data(tmp_path / "a.npz", stride=0)


@pytest.mark.parametrize("n_frames,val_fraction,n_blocks", [(1000, 0.1, 10), (97, 0.2, 7), (5, 0.1, 10), (50, 0.0, 3)])
def test_split_blocks(n_frames, val_fraction, n_blocks):
    train, val = split_blocks(n_frames, val_fraction, n_blocks)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n_frames))
    assert len(val) == round(val_fraction * n_frames)
    # contiguous: at most n_blocks validation runs, each of (nearly) equal length
    if len(val):
        runs = np.split(val, np.flatnonzero(np.diff(val) != 1) + 1)
        assert len(runs) <= n_blocks
        assert max(map(len, runs)) - min(map(len, runs)) <= 1


def test_split_blocks_spreads_validation():
    train, val = split_blocks(1000, 0.1, 10)
    np.testing.assert_array_equal(val[:10], [90, 91, 92, 93, 94, 95, 96, 97, 98, 99])
    assert val.min() < 100 and val.max() == 999  # covers the whole trajectory
    with pytest.raises(ValueError):
        split_blocks(10, 1.5)


def test_units():
    assert kT(300.0) == pytest.approx(2.494, abs=1e-3)
    from openmm import unit

    assert kT(300.0 * unit.kelvin) == pytest.approx(kT(300.0))
    f = torch.tensor([2.494338785])
    assert forces_to_kT(f, 300.0).item() == pytest.approx(1.0, rel=1e-6)
    assert energies_to_kT(np.array([kT(310.0)]), 310.0)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        kT(0.0)


def test_load_simulated_file(tmp_path):
    from openmm_smoothflow.md.sampling import simulate
    from openmm_smoothflow.md.systems import alanine_dipeptide_pdb

    simulate(alanine_dipeptide_pdb(), 2, output=tmp_path / "sim.npz", steps_per_frame=5, equilibration_steps=0, progress=False)
    data = load_md_data(tmp_path / "sim.npz", require_forces=True)
    assert data.positions.shape == (2, 22, 3) and data.atom_names[1] == "CH3" and data.elements[1] == "C"
    assert data.energies_kT().shape == (2,)
