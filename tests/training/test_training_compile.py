"""``--compile``: the losses through torch.compile, force matching through the hand-written gradient pass,
equal to eager training (losses and every parameter gradient) for NLL, NLL+FM and NLL+FM+KL.

The default run traces with torch.compile's ``eager`` backend (the same dynamo graph, no code generation:
seconds); the inductor build of the same losses (minutes on two busy cores) and a trainer run are slow."""
import pytest
import torch

from helpers import TINY_MODEL, chain_topology, randomize
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.training.compiled import CompiledFlow, compiled_flow
from openmm_smoothflow.training.losses import LossWeights, combined_loss

TINY = dict(hidden=[8], n_torsion_layers=2, n_ic_layers=2)
MODES = {"nll": LossWeights(), "nll+fm": LossWeights(fm=0.01), "nll+fm+kl": LossWeights(fm=0.01, kl=0.1)}


def harmonic_target(x):
    """A differentiable target energy (kT): bonds of the chain pulled to 0.15 nm."""
    bonds = (x[:, 1:] - x[:, :-1]).norm(dim=-1)
    return 100.0 * ((bonds - 0.15) ** 2).sum(dim=1)


def setup(kind="smooth"):
    torch.manual_seed(0)
    generator = randomize(BoltzmannGenerator.from_topology(chain_topology(5), kind=kind, **TINY).double(), 0.3, 4)
    with torch.no_grad():
        x, _ = generator.sample(8, generator=torch.Generator().manual_seed(1))
    forces = 50.0 * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return generator, x.detach(), forces


def losses_and_gradients(model, generator, x, forces, weights):
    torch.manual_seed(5)  # the same flow samples for the reverse KL
    terms = combined_loss(model, x, forces, weights, harmonic_target, 8)
    grads = torch.autograd.grad(terms["loss"], list(generator.parameters()), allow_unused=True)
    return {k: float(v.detach()) for k, v in terms.items()}, grads


def assert_same(model, generator, x, forces, weights):
    expected, g_eager = losses_and_gradients(generator, generator, x, forces, weights)
    got, g_compiled = losses_and_gradients(model, generator, x, forces, weights)
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-10, abs=1e-10), k
    scale = max(float(g.abs().max()) for g in g_eager if g is not None)
    assert scale > 0
    for a, b in zip(g_compiled, g_eager):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize("mode", list(MODES))
def test_compiled_losses_equal_eager(mode):
    generator, x, forces = setup()
    model = CompiledFlow(generator, backend="eager")
    assert model.hand_written
    assert_same(model, generator, x, forces, MODES[mode])


def test_a_flow_without_the_hand_written_pass_keeps_autograd_for_force_matching():
    generator, x, forces = setup("spline")
    model = CompiledFlow(generator, backend="eager")
    assert not model.hand_written
    assert_same(model, generator, x, forces, MODES["nll+fm"])


def test_compile_is_for_one_process():
    generator, _, _ = setup()
    with pytest.raises(ValueError, match="one process"):
        compiled_flow(generator, world=2)


@pytest.mark.slow  # inductor code generation of the forward and backward: minutes on two busy cores
def test_inductor_compiled_losses_equal_eager():
    generator, x, forces = setup()
    model = CompiledFlow(generator)
    for mode in ("nll", "nll+fm"):
        assert_same(model, generator, x, forces, MODES[mode])


@pytest.mark.slow
def test_trainer_with_compile_runs(md_data, tmp_path):
    from openmm_smoothflow.training.config import TrainConfig
    from openmm_smoothflow.training.trainer import Trainer

    config = TrainConfig(data=[str(md_data)], out=str(tmp_path / "run"), epochs=1, batch_size=16, fm=0.001,
                         val_kl_samples=0, model=TINY_MODEL, threads=1, max_steps=3, compile=True)
    trainer = Trainer(config)
    assert isinstance(trainer.model, CompiledFlow)
    record = trainer.fit()
    assert record["train_loss"] == record["train_loss"] and (tmp_path / "run" / "best.pt").exists()
