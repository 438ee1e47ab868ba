"""SparseGPT on small random layers: lower output error than magnitude pruning at the same sparsity,
exact sparsity, the N:M pattern in every group, and prune.sparsegpt end to end on a tiny Llama."""

import pytest
import torch
from pydantic import ValidationError

import slimkit
from slimkit.prune.masks import magnitude_mask
from slimkit.prune.nm import nm_mask
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.prune.sparsegpt_math import SparsityPattern, sparsegpt_prune
from tests._models import tiny_llama, token_batches


def layer(rows, cols, tokens=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5
    x = (torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ mix) * torch.rand(
        cols, generator=g, dtype=torch.float64).mul(3).exp()
    return torch.randn(rows, cols, generator=g), x


def output_error(x, w, w_hat):
    return float((x @ (w.double() - w_hat.double()).T).pow(2).sum())


def loop_over(ids):
    def loop(model):
        for batch in ids.split(2):
            model(input_ids=batch)
    return loop


@pytest.mark.parametrize("rows, cols, sparsity", [(32, 96, 0.5), (48, 130, 0.5), (40, 200, 0.7), (64, 576, 0.6)],
                         ids=["96-50", "130-50-ragged-block", "200-70", "576-60"])
def test_beats_magnitude_and_hits_exact_sparsity(rows, cols, sparsity):
    w, x = layer(rows, cols)
    pruned = sparsegpt_prune(w, 2 * x.T @ x / x.shape[0], SparsityPattern(sparsity), block_size=64)
    assert int((pruned == 0).sum()) == round(sparsity * w.numel())
    magnitude = w * magnitude_mask(w, sparsity)
    assert output_error(x, w, pruned) < 0.8 * output_error(x, w, magnitude)


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)], ids=["2:4", "4:8", "1:4"])
def test_n_m_pattern_holds_in_every_group(n, m):
    w, x = layer(24, 64, seed=1)
    pruned = sparsegpt_prune(w, 2 * x.T @ x / x.shape[0], SparsityPattern(n=n, m=m), block_size=32)
    nonzero = (pruned != 0).reshape(24, 64 // m, m).sum(-1)  # (rows, groups)
    assert torch.all(nonzero == n)
    magnitude = w * nm_mask(w.abs(), n, m)
    assert output_error(x, w, pruned) < output_error(x, w, magnitude)


def test_n_m_needs_divisible_width():
    w, x = layer(4, 30)
    with pytest.raises(ValueError, match="multiple of 4"):
        sparsegpt_prune(w, 2 * x.T @ x / x.shape[0], SparsityPattern(n=2, m=4))


def test_apply_prunes_decoder_linears_exactly():
    model, ids = tiny_llama(), token_batches(n=4)
    report = slimkit.apply(model, SparseGPTConfig(sparsity=0.5, block_size=32), loop_over(ids))
    assert report.stats["sparsity"] == 0.5 and report.stats["linears"] == 14
    assert int((model.lm_head.weight == 0).sum()) == 0  # the tied embedding stays dense


@pytest.mark.parametrize("fields", [{}, {"sparsity": 0.5, "n": 2, "m": 4}, {"n": 2}, {"n": 4, "m": 4},
                                    {"n": 2, "m": 4, "block_size": 30}],
                         ids=["nothing", "both", "n-only", "n-equals-m", "block-not-multiple"])
def test_invalid_patterns_are_refused(fields):
    with pytest.raises(ValidationError):
        SparseGPTConfig(**fields)
