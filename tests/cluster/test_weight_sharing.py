"""cluster.kmeans: at most 2^bits shared values per layer (or channel) plus exact zeros; activation weighting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.cluster.record import CodebookRecord, get_share_note
from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.prune.magnitude import MagnitudePruneConfig
from tests._models import lenet_bundle


def _distinct_nonzero(t: torch.Tensor) -> int:
    return int(t[t != 0].unique().numel())


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_each_layer_keeps_at_most_2_to_the_bits_values_and_pruned_zeros(bits):
    model = lenet_bundle().model
    slimkit.apply(model, MagnitudePruneConfig(sparsity=0.8))
    pruned = {n: p == 0 for n, p in model.named_parameters() if n.endswith("weight")}
    report = slimkit.apply(model, KMeansClusterConfig(bits=bits))
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            assert _distinct_nonzero(p) <= 2**bits
            assert torch.equal(p == 0, pruned[name])  # zeros stay exact zeros and nothing else becomes zero
    assert report.stats["kept_params"] == sum(int((~z).sum()) for z in pruned.values())
    assert isinstance(get_share_note(model[1], "weight"), CodebookRecord)


def test_per_channel_codebooks_and_a_half_precision_codebook():
    model = nn.Sequential(nn.Linear(64, 12))
    slimkit.apply(model, KMeansClusterConfig(bits=2, granularity="channel", codebook_dtype="float16"))
    w = model[0].weight
    assert all(_distinct_nonzero(row) <= 4 for row in w)
    assert _distinct_nonzero(w) > 4  # rows have their own values
    assert torch.equal(w, w.half().float())  # every value is exactly a float16 centroid
    assert get_share_note(model[0], "weight").codebook.shape == (12, 4)


def test_more_bits_means_less_error():
    sqnr = []
    for bits in (2, 4, 6):
        model = lenet_bundle().model
        sqnr.append(slimkit.apply(model, KMeansClusterConfig(bits=bits)).stats["weight_sqnr_db"])
    assert sqnr[0] < sqnr[1] < sqnr[2]


def test_activation_weighting_lowers_the_output_error_where_inputs_are_uneven():
    torch.manual_seed(0)
    layer = nn.Linear(256, 64)
    scale = torch.ones(256)
    scale[:16] = 30.0  # a few loud input channels, as LLM activations have
    x = torch.randn(512, 256) * scale

    def output_error(weighting: str) -> float:
        model = nn.Sequential(nn.Linear(256, 64))
        model[0].load_state_dict(layer.state_dict())
        cfg = KMeansClusterConfig(bits=3, granularity="channel", weighting=weighting)
        slimkit.apply(model, cfg, forward_loop=lambda m: m(x[:256]))
        with torch.no_grad():
            return float((model(x[256:]) - layer(x[256:])).pow(2).mean())

    assert output_error("activation") < 0.75 * output_error("none")  # measured 0.55x


def test_activation_weighting_needs_calibration_data():
    with pytest.raises(ValueError, match="needs calibration data"):
        slimkit.apply(nn.Sequential(nn.Linear(4, 4)), KMeansClusterConfig(bits=2, weighting="activation"))
    cfg = KMeansClusterConfig(bits=2, weighting="activation", targets={"module_types": ["Embedding"]})
    model = nn.Sequential(nn.Embedding(10, 4))
    with pytest.raises(ValueError, match="supports Linear and ungrouped convolution"):
        slimkit.apply(model, cfg, forward_loop=lambda m: m(torch.arange(10)))


def test_convolutions_cluster_with_activation_weighting():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    x = torch.randn(16, 3, 8, 8)
    report = slimkit.apply(model, KMeansClusterConfig(bits=3, weighting="activation"), forward_loop=lambda m: m(x))
    assert report.stats["layers"] == 2
    assert _distinct_nonzero(model[0].weight) <= 8
