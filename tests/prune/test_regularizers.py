"""L1 and group-lasso penalties: values, gradients at zero, and group lasso followed by threshold removal."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.prune.regularizers import group_lasso_penalty, l1_penalty, model_group_lasso, model_l1
from slimkit.prune.structured.method import StructuredPruneConfig
from slimkit.train.classifier import TrainConfig, train_classifier


def test_l1_value_and_model_form() -> None:
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 0.0, -0.5])
    assert float(l1_penalty([a, b])) == pytest.approx(6.5)
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    expected = model[0].weight.abs().sum() + model[2].weight.abs().sum()
    assert float(model_l1(model).detach()) == pytest.approx(float(expected.detach()))


def test_group_lasso_value_and_finite_gradient_at_zero() -> None:
    rows = torch.tensor([[3.0, 0.0], [0.0, 0.0]], requires_grad=True)
    cols = torch.tensor([[4.0], [0.0]], requires_grad=True)
    penalty = group_lasso_penalty([rows, cols])
    assert float(penalty.detach()) == pytest.approx(5.0)
    penalty.backward()
    assert torch.isfinite(rows.grad).all() and rows.grad[0, 0] == pytest.approx(0.6)
    assert rows.grad[1].abs().sum() == 0


def test_group_lasso_training_then_threshold_removal() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    train_classifier(model, x, y, TrainConfig(epochs=30, batch_size=64, lr=1e-2),
                     extra_loss=lambda m: 3e-2 * model_group_lasso(m))
    before = model(x)
    report = slimkit.apply(model, StructuredPruneConfig(threshold=1e-2))
    assert model[0].out_features < 16  # most neurons were driven to (near) zero
    assert report.stats["params_after"] < report.stats["params_before"] / 2
    assert (model(x).argmax(1) == before.argmax(1)).float().mean() > 0.99
