"""k-means maths: Lloyd's iterations never increase the weighted error; initialisations; weights pull centroids."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.cluster.kmeans import assign, init_centroids, kmeans, weighted_sse


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 4), n=st.integers(1, 300), k=st.integers(1, 17),
       init=st.sampled_from(["linear", "density", "random"]), heavy=st.booleans())
def test_lloyd_never_increases_the_within_cluster_error(seed, rows, n, k, init, heavy):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(rows, n, generator=g, dtype=torch.float64)
    if heavy:
        values = values ** 3  # heavy tails, as trained weights have
    weights = torch.rand(rows, n, generator=g, dtype=torch.float64) * (torch.rand(rows, n, generator=g) > 0.3)
    result = kmeans(values, weights, k, init=init, iterations=25, track_error=True)
    scale = float((weights * values**2).sum())  # rounding noise is relative to the data, not to the error
    for before, after in zip(result.sse, result.sse[1:], strict=False):
        assert after <= before + 1e-12 * scale
    assert result.sse[-1] == pytest.approx(weighted_sse(values, weights, result.centroids, result.index))
    assert torch.equal(result.index, assign(values, result.centroids))  # converged or stopped on an assignment


def test_initialisations_follow_the_paper():
    values = torch.tensor([[-4.0, -1.0, 0.0, 0.5, 1.0, 8.0]])
    weights = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0, 1.0]])  # the 0.0 entry is pruned: ignored
    linear = init_centroids(values, weights, 3, "linear")
    assert linear.tolist() == [[-4.0, 2.0, 8.0]]  # evenly spaced between min and max
    density = init_centroids(values, weights, 2, "density")
    assert density.tolist() == [[-1.0, 1.0]]  # evenly spaced on the CDF of the 5 valid values
    random = init_centroids(values, weights, 4, "random", seed=3)
    assert set(random.reshape(-1).tolist()) <= {-4.0, -1.0, 0.5, 1.0, 8.0}  # drawn from the valid values


def test_each_row_is_clustered_on_its_own_and_weights_pull_centroids():
    values = torch.tensor([[0.0, 1.0, 10.0, 11.0], [100.0, 101.0, 200.0, 201.0]], dtype=torch.float64)
    result = kmeans(values, torch.ones_like(values), 2)
    assert result.centroids.sort(dim=1).values.tolist() == [[0.5, 10.5], [100.5, 200.5]]
    pulled = kmeans(values, torch.tensor([[1.0, 9.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]), 2)
    assert pulled.centroids[0].sort().values[0] == pytest.approx(0.9)  # the heavy entry pulls its centroid


def test_more_clusters_than_values_and_empty_rows():
    values = torch.tensor([[3.0, 3.0], [1.0, 2.0]])
    weights = torch.tensor([[0.0, 0.0], [1.0, 1.0]])  # first row fully pruned
    result = kmeans(values, weights, 8, init="random")
    assert result.centroids[0].eq(0).all()
    assert set(result.centroids[1].gather(0, result.index[1]).tolist()) == {1.0, 2.0}
    with pytest.raises(ValueError, match="at least one cluster"):
        kmeans(values, weights, 0)
