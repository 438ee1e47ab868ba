"""The small training loops: the classifier loop learns and reports progress; LM recovery lowers the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.train.causal_lm import finetune_causal_lm
from slimkit.train.classifier import TrainConfig, train_classifier
from tests._models import tiny_llama, token_batches


def test_classifier_loop_learns_and_reports_progress() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    seen: list[float] = []
    losses = train_classifier(model, x, y, TrainConfig(epochs=5, batch_size=32, lr=3e-2), on_step=seen.append)
    assert losses[-1] < losses[0] / 3
    assert len(seen) == 5 * 8 and seen[-1] == pytest.approx(1.0) and not model.training


def test_causal_lm_recovery_lowers_the_loss_on_its_data() -> None:
    model = tiny_llama()
    windows = token_batches(n=2, seq_len=16)
    losses = finetune_causal_lm(model, windows, steps=20, lr=3e-3)
    assert len(losses) == 20 and losses[-1] < losses[0] - 0.5
    assert all(p.grad is None for p in model.parameters()) and not model.training
