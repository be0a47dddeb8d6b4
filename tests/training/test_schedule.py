"""The learning-rate schedule: x lr_decay per epoch, or per lr_decay_steps optimiser steps (the paper's
x 0.7 per ~7,000 steps whatever the size of an epoch here)."""
import pytest

from helpers import TINY_MODEL
from openmm_smoothflow.training.config import TrainConfig
from openmm_smoothflow.training.trainer import Trainer


def _trainer(md_data, tmp_path, **kw):
    config = TrainConfig(data=[str(md_data)], out=str(tmp_path / "run"), batch_size=32, model=TINY_MODEL,
                         threads=1, val_kl_samples=0, **kw)
    return Trainer(config, log=lambda *a: None)


def test_decay_per_epoch_by_default(md_data, tmp_path):
    trainer = _trainer(md_data, tmp_path)
    assert trainer.lr_at(0, 5) == pytest.approx(5e-4) and trainer.lr_at(2, 0) == pytest.approx(5e-4 * 0.49)


def test_decay_per_steps_counts_steps_across_epochs(md_data, tmp_path):
    trainer = _trainer(md_data, tmp_path, lr_decay_steps=4, epochs=3)
    n_steps = len(trainer.train_idx) // 32  # 360 training frames: 11 steps per epoch
    assert n_steps == 11
    assert trainer.lr_at(0, 3) == pytest.approx(5e-4)
    assert trainer.lr_at(0, 4) == pytest.approx(5e-4 * 0.7)
    assert trainer.lr_at(1, 1) == pytest.approx(5e-4 * 0.7 ** 3)  # global step 12
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4 * 0.7 ** (32 // 4))  # last step: 32


def test_negative_decay_steps_are_rejected():
    with pytest.raises(ValueError, match="lr_decay_steps"):
        TrainConfig(data=["x.npz"], lr_decay_steps=-1).validate()
