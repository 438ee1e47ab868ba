"""Structured pruning of sequential MLPs and CNNs: exact removal, importance sources, save/reload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.eval.metrics import count_params
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.prune.structured import importance as imp
from slimkit.prune.structured.groups import find_groups
from slimkit.prune.structured.method import StructuredPruneConfig
from slimkit.prune.structured.surgery import unit_views
from slimkit.train.gradient_loops import classifier_loss_loop
from tests._models import lenet_bundle


def _small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_architecture("small-cnn", {"widths": [8, 12], "image_size": 12}).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def _silence(model: nn.Module, drop: dict[str, list[int]]) -> None:
    """Zero the given units' weights (producer rows, consumer columns): removing them cannot change
    the output, and their norm is the lowest."""
    groups = {g.name: g for g in find_groups(model, "sequential")}
    with torch.no_grad():
        for name, units in drop.items():
            part = groups[name].consumer_part()
            consumer, producer = model.get_submodule(part.module), model.get_submodule(name)
            for u in units:
                consumer.weight[:, u * part.width:(u + 1) * part.width] = 0.0
                producer.weight[u] = 0.0


def test_mlp_neurons_removed_exactly() -> None:
    model = lenet_bundle(in_features=64).model
    _silence(model, {"1": list(range(0, 300, 2)), "3": list(range(0, 100, 2))})
    x = torch.randn(5, 64)
    before = model(x)
    report = slimkit.apply(model, StructuredPruneConfig(fraction=0.5))
    assert (model[1].out_features, model[3].in_features, model[3].out_features, model[5].in_features) == (
        150, 150, 50, 50)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    assert report.stats["params_after"] == count_params(model) < report.stats["params_before"]


def test_cnn_channels_with_batchnorm_and_flatten_removed_exactly() -> None:
    model = _small_cnn()
    _silence(model, {"0": [1, 3, 5, 7], "4": [0, 2, 4, 6, 8, 10]})
    x = torch.randn(3, 1, 12, 12)
    before = model(x)
    slimkit.apply(model, StructuredPruneConfig(fraction=0.5, importance="l1"))
    assert (model[0].out_channels, model[1].num_features, model[4].in_channels) == (4, 4, 4)
    assert (model[4].out_channels, model[5].running_mean.shape[0], model[9].in_features) == (6, 6, 6 * 3 * 3)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_unit_views_match_group_lasso_definition() -> None:
    model = _small_cnn()
    group = find_groups(model, "sequential")[1]
    norms = imp.unit_norms(unit_views(model, group), 2)
    c = 3
    expected = torch.cat([model[4].weight[c].reshape(-1), model[9].weight[:, c * 9:(c + 1) * 9].reshape(-1)])
    assert float(norms[c]) == pytest.approx(float(expected.detach().double().norm()), rel=1e-9)


@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_data_driven_importance_keeps_the_active_units(importance: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight[:4] *= 0.01  # units 0..3 barely fire
        model[0].bias[:4] = 0.0
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    slimkit.apply(model, StructuredPruneConfig(fraction=0.5, importance=importance),
                  forward_loop=classifier_loss_loop(x, y, batch_size=16))
    assert model[0].out_features == 4 and model[2].in_features == 4


def test_calibrated_importance_without_data_is_refused() -> None:
    model = lenet_bundle(in_features=64).model
    with pytest.raises(ValueError, match="calibration"):
        slimkit.apply(model, StructuredPruneConfig(fraction=0.5, importance="activation"))
    with pytest.raises(ValueError, match="exactly one"):
        StructuredPruneConfig()


def test_targets_restrict_groups_and_multiple_of_rounds() -> None:
    model = lenet_bundle(in_features=64).model
    slimkit.apply(model, StructuredPruneConfig(fraction=0.3, multiple_of=8, targets={"include": ["1"]}))
    assert model[1].out_features == 208 and model[3].out_features == 100


def test_threshold_removes_small_norm_units() -> None:
    model = lenet_bundle(in_features=64).model
    with torch.no_grad():
        model[3].weight[:30] = 0.0
        model[5].weight[:, :30] = 0.0
    slimkit.apply(model, StructuredPruneConfig(threshold=1e-6, targets={"include": ["3"]}))
    assert model[3].out_features == 70 and model[1].out_features == 300


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_shrunk_torch_model_saves_and_reloads(tmp_path, arch: str) -> None:  # type: ignore[no-untyped-def]
    if arch == "mlp":
        bundle, x = lenet_bundle(in_features=64), torch.randn(4, 64)
    else:
        kwargs = {"widths": [8, 12], "image_size": 12}
        bundle = ModelBundle(_small_cnn(), "torch", "small-cnn", arch={"name": "small-cnn", "kwargs": kwargs})
        x = torch.randn(4, 1, 12, 12)
    slimkit.apply(bundle.model, StructuredPruneConfig(fraction=0.4))
    expected = bundle.model(x)
    loaded = slimkit.load_dir(slimkit.save(bundle, tmp_path / "out"))
    torch.testing.assert_close(loaded.model(x), expected)
    assert count_params(loaded.model) == count_params(bundle.model)
