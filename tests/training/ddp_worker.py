"""Run under torchrun by test_training: trains a tiny model and saves this rank's weights."""
import sys

import torch

from openmm_smoothflow.training.config import TrainConfig
from openmm_smoothflow.training.trainer import Trainer

data, out = sys.argv[1], sys.argv[2]
config = TrainConfig(data=[data], out=out, epochs=1, max_steps=3, batch_size=16, fm=0.001, val_kl_samples=0,
                     model={"hidden": [16, 16], "n_torsion_layers": 2, "n_ic_layers": 2}, threads=1)
trainer = Trainer(config, log=lambda *a: None)
trainer.fit()
torch.save(trainer.generator.state_dict(), f"{out}/rank{trainer.rank}.pt")
