"""Magnitude mask math: exact sparsity, ties, thresholds, global budgets, and the method."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

import slimkit
from slimkit.prune.masks import global_magnitude_masks, magnitude_mask, prune_count, threshold_mask
from tests._models import tiny_llama


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 50), cols=st.integers(1, 70), sparsity=st.floats(0, 1), seed=st.integers(0, 999),
       ties=st.booleans())
def test_mask_hits_exact_sparsity_and_keeps_the_largest(rows, cols, sparsity, seed, ties):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    if ties:
        w = w.round()  # many equal magnitudes (and zeros)
    mask = magnitude_mask(w, sparsity)
    assert int((~mask).sum()) == prune_count(w.numel(), sparsity)
    if mask.any() and (~mask).any():
        assert w[~mask].abs().max() <= w[mask].abs().min()


def test_threshold_mask_zeroes_below_threshold():
    w = torch.tensor([[-0.02, 0.005, 0.01], [-0.0099, 0.3, 0.0]])
    assert threshold_mask(w, 0.01).tolist() == [[True, False, True], [False, True, False]]
    with pytest.raises(ValueError):
        threshold_mask(w, -1.0)


def test_global_masks_share_one_budget():
    small, large = torch.randn(30, 30) * 0.01, torch.randn(30, 30)
    masks = global_magnitude_masks([small, large], 0.5)
    total = sum(int((~m).sum()) for m in masks)
    assert total == 900 and int((~masks[0]).sum()) > int((~masks[1]).sum())


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_method_reaches_exact_sparsity(scope):
    model = tiny_llama()
    report = slimkit.apply(model, slimkit.MagnitudePruneConfig(sparsity=0.6, scope=scope))
    assert report.stats["sparsity"] == pytest.approx(0.6, abs=1e-4)
    if scope == "layer":
        w = model.model.layers[1].mlp.down_proj.weight
        assert int((w == 0).sum()) == prune_count(w.numel(), 0.6)


def test_magnitude_threshold_method():
    model = tiny_llama()
    slimkit.apply(model, slimkit.MagnitudePruneConfig(threshold=0.01))
    w = model.model.layers[0].self_attn.q_proj.weight
    assert torch.all((w == 0) | (w.abs() >= 0.01))
    with pytest.raises(ValueError, match="exactly one"):
        slimkit.MagnitudePruneConfig(threshold=0.01, sparsity=0.5)
