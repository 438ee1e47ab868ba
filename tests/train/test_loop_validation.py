"""The loop's validation: the loss before the first step is measured (what training starts from) but is
never a "best" candidate, so ``keep_best`` always ends on trained weights; a resumed run keeps the first
measurement instead of measuring the half-trained model again."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from slimkit.distill.objective import OwnLossObjective
from slimkit.distill.tasks import ClassifierTask
from slimkit.train.loop import LoopSettings, run_training, validation_loss


def _setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    val = [(x[64:], y[64:])]
    return OwnLossObjective(model, ClassifierTask()), x, y, val


def test_the_loss_before_training_is_reported_and_training_lowers_it():
    objective, x, y, val = _setup()
    before = validation_loss(copy.deepcopy(objective), val)
    settings = LoopSettings(steps=20, batch_size=16, lr=1e-2, seed=0, eval_every=5, keep_best=True)
    stats = run_training(objective, 64, lambda idx: (x[idx], y[idx]), settings, val_batches=val).stats
    assert stats["val_loss_before"] == round(before, 4)
    assert stats["val_best_step"] > 0 and stats["val_loss_best"] < stats["val_loss_before"]


def test_a_resumed_run_keeps_the_measurement_from_before_its_first_step(tmp_path):
    objective, x, y, val = _setup()
    settings = LoopSettings(steps=10, batch_size=16, lr=1e-2, seed=0, eval_every=5, checkpoint_every=5,
                            checkpoint_dir=tmp_path / "ckpt", fingerprint="run")
    first = run_training(objective, 64, lambda idx: (x[idx], y[idx]), settings, val_batches=val).stats
    longer = dataclasses.replace(settings, steps=20)  # continue the same directory for 10 more steps
    longer_objective, *_ = _setup()
    resumed = run_training(longer_objective, 64, lambda idx: (x[idx], y[idx]), longer, val_batches=val).stats
    assert resumed["train_resumed_from_step"] == 10
    assert resumed["val_loss_before"] == first["val_loss_before"]
