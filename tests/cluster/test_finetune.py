"""cluster.finetune: the codebook trains with per-cluster summed gradients; values stay shared, zeros stay zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.cluster.finetune import CentroidFinetuneConfig
from slimkit.cluster.record import CodebookRecord, get_share_note
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.train.classifier import TrainConfig, train_classifier
from tests._models import lenet_bundle


def _digits():
    from slimkit.data.images import digits

    return digits("train")


def test_finetuning_keeps_at_most_2_to_the_bits_values_plus_zero_and_recovers_accuracy():
    x, y = _digits()
    model = lenet_bundle(in_features=64).model
    train_classifier(model, x, y, TrainConfig(epochs=8, lr=3e-3))
    slimkit.apply(model, MagnitudePruneConfig(sparsity=0.7))
    slimkit.apply(model, KMeansClusterConfig(bits=2))
    zeros = {n: (p == 0).clone() for n, p in model.named_parameters() if n.endswith("weight")}
    with torch.no_grad():
        loss_before = float(nn.functional.cross_entropy(model(x), y))
    ctl = slimkit.prepare(model, CentroidFinetuneConfig())
    train_classifier(model, x, y, TrainConfig(epochs=3, lr=1e-3, seed=1), on_step=ctl.step)
    report = ctl.finalize()
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            assert int(p[p != 0].unique().numel()) <= 4
            assert torch.equal(p == 0, zeros[name])  # pruned entries never come back
    with torch.no_grad():
        assert float(nn.functional.cross_entropy(model(x), y)) < loss_before
    assert report.stats["centroid_shift_rms"] > 0
    book = get_share_note(model[1], "weight").codebook
    assert set(model[1].weight[model[1].weight != 0].tolist()) <= set(book.reshape(-1).tolist())


def test_the_codebook_gradient_is_the_sum_of_its_weights_gradients():
    model = nn.Sequential(nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.2, 0.0, 0.1, 0.3, 0.0]] * 3) * torch.tensor([[1.0], [2.0], [3.0]]))
    slimkit.apply(model, KMeansClusterConfig(bits=3, granularity="channel"))
    reference = model[0].weight.detach().clone().requires_grad_(True)
    x = torch.randn(5, 6)
    (x @ reference.T).pow(2).sum().backward()
    ctl = slimkit.prepare(model, CentroidFinetuneConfig())
    model(x).sub(model[0].bias).pow(2).sum().backward()
    shared = model[0].parametrizations.weight[0]
    expected = torch.zeros_like(shared.codebook)
    keep = shared.keep
    expected.scatter_add_(1, shared.index.long(), reference.grad * keep)
    assert torch.allclose(shared.codebook.grad, expected, atol=1e-6)
    ctl.finalize()


def test_weights_without_a_codebook_are_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    slimkit.apply(model, KMeansClusterConfig(bits=2, targets={"include": ["0"]}))
    with pytest.raises(ValueError, match=r"cluster.finetune: 1.weight has no codebook"):
        slimkit.prepare(model, CentroidFinetuneConfig())
    assert not hasattr(model[0], "parametrizations")  # nothing was attached before the refusal
    ctl = slimkit.prepare(model, CentroidFinetuneConfig(targets={"include": ["0"]}))
    ctl.finalize()
    assert isinstance(get_share_note(model[0], "weight"), CodebookRecord)
