"""prune.magnitude refuses non-finite weights instead of ranking NaN/Inf among the magnitudes."""

import pytest
import torch

import slimkit
from slimkit.numerics import NonFiniteError
from tests._models import lenet_bundle


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_magnitude_pruning_stops_on_a_non_finite_weight_naming_the_layer(scope, bad):
    model = lenet_bundle().model
    with torch.no_grad():
        model[3].weight[10, 20] = bad
    dense = model[1].weight.detach().clone()
    with pytest.raises(NonFiniteError, match=r"prune\.magnitude: weight 3\.weight holds"):
        slimkit.apply(model, slimkit.MagnitudePruneConfig(sparsity=0.5, scope=scope))
    assert torch.equal(model[1].weight, dense)  # nothing was pruned


def test_magnitude_pruning_of_finite_weights_reaches_its_sparsity():
    model = lenet_bundle().model
    report = slimkit.apply(model, slimkit.MagnitudePruneConfig(sparsity=0.5))
    assert report.stats["sparsity"] == pytest.approx(0.5, abs=1e-3)
