"""The aoti backend (AOTInductor package of the hand-written energy+force pass + ``openmm.PythonForce``)
against the TorchScript export run by the TorchForce, in real OpenMM contexts; built once and cached on
disk, found again by a new FlowPotential of a re-export of the same weights, one package per precision;
a model it cannot build falls back to the TorchForce with a warning.

The model is test_compiled's tiny smooth flow (5-atom chain, two coupling layers): its AOTInductor build
takes about a minute on two busy cores (the paper-size model several minutes, ``bench speed``)."""
import numpy as np
import openmm
import pytest
import torch

from helpers import chain_topology
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.potential import FlowPotential, export
from openmm_smoothflow.potential.aoti import AOTIEnergy, cache_key
from test_compiled import TINY, configurations, energies_forces, tiny_generator


@pytest.mark.slow  # the AOTInductor build: about a minute on an idle machine, several on busy cores
def test_aoti_backend_equals_torchforce_and_is_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SMOOTHFLOW_CACHE", str(tmp_path / "cache"))
    generator = tiny_generator()
    export(generator, tmp_path / "tiny.pt")
    topology = chain_topology(5)
    frames = configurations(generator)
    potential = FlowPotential(tmp_path / "tiny.pt")
    e_tf, f_tf = energies_forces(potential.createSystem(topology), frames)
    e_a, f_a = energies_forces(potential.createSystem(topology, backend="aoti"), frames)
    assert "building the float64 AOTInductor backend" in capsys.readouterr().err
    assert isinstance(potential._aoti[torch.float64], AOTIEnergy)
    assert np.abs(e_tf[2:] - e_tf[:2].max()).min() > 100.0  # the wall is in play for the last two
    np.testing.assert_allclose(e_a, e_tf, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(f_a, f_tf, rtol=1e-8, atol=1e-8 * np.abs(f_tf).max())
    packages = list((tmp_path / "cache" / "aoti").glob("*.pt2"))
    assert len(packages) == 1

    # precision="single": a second package, the flow in float32 (float64 positions, energies, forces)
    e_32, f_32 = energies_forces(potential.createSystem(topology, backend="aoti", precision="single"), frames)
    assert "building the float32 AOTInductor backend" in capsys.readouterr().err
    assert len(list((tmp_path / "cache" / "aoti").glob("*.pt2"))) == 2
    # frames 0-2 (inside the support, a bond on the wall); frame 3 puts three torsion atoms on one line,
    # where the torsion's gradient is singular (1 / sin 0) and float32 forces are as wrong as the float32
    # TorchScript export's
    np.testing.assert_allclose(e_32[:3], e_tf[:3], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(f_32[:3], f_tf[:3], rtol=1e-4, atol=1e-4 * np.abs(f_tf[:3]).max())
    assert np.abs(e_32 - e_tf).max() > 0  # it does compute in float32

    # a re-export of the same weights (different file bytes) finds the cached package: no second build
    export(generator, tmp_path / "again.pt")
    again = FlowPotential(tmp_path / "again.pt")
    e_b, _ = energies_forces(again.createSystem(topology, backend="aoti"), frames)
    assert "building" not in capsys.readouterr().err
    np.testing.assert_allclose(e_b, e_tf, rtol=1e-10, atol=1e-9)
    # on atoms 1-5 of a 7-particle system, as the TorchForce
    def embedded(backend):
        system = openmm.System()
        for _ in range(7):
            system.addParticle(12.0)
        system.addForce(again.createForce(atoms=[1, 2, 3, 4, 5], backend=backend))
        return system

    padded = np.concatenate([frames[:, :1] - 1.0, frames, frames[:, :1] + 1.0], axis=1)
    e_sub, f_sub = energies_forces(embedded("aoti"), padded)
    e_sub_tf, f_sub_tf = energies_forces(embedded("torchforce"), padded)
    np.testing.assert_allclose(e_sub, e_tf, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(f_sub, f_sub_tf, rtol=1e-8, atol=1e-8 * np.abs(f_tf).max())
    assert np.abs(f_sub[:, [0, 6]]).max() == 0.0


def test_cache_key_follows_the_weights(tmp_path):
    generator = tiny_generator()
    export(generator, tmp_path / "a.pt")
    export(generator, tmp_path / "b.pt")
    with torch.no_grad():
        next(generator.parameters()).add_(1e-9)
    export(generator, tmp_path / "c.pt")
    keys = [cache_key(torch.jit.load(str(tmp_path / f"{n}.pt"))) for n in "abc"]
    assert keys[0] == keys[1] != keys[2]


def test_a_model_without_the_hand_written_pass_falls_back_to_torchforce(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOOTHFLOW_CACHE", str(tmp_path / "cache"))
    spline = BoltzmannGenerator.from_topology(chain_topology(5), kind="spline", **TINY).double()
    export(spline, tmp_path / "spline.pt")
    potential = FlowPotential(tmp_path / "spline.pt")
    with pytest.warns(UserWarning, match="aoti backend is unavailable.*hand-written gradient"):
        force = potential.createForce(chain_topology(5), backend="aoti")
    assert type(force).__name__ == "TorchForce"
    assert not (tmp_path / "cache").exists()
