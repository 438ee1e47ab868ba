"""Wanda: scores |W_ij|·‖X_j‖₂ against a float64 brute-force reference, exact sparsity in every row,
N:M groups, and prune.wanda end to end on a tiny Llama."""

import pytest
import torch

import slimkit
from slimkit.prune.sparsegpt_math import SparsityPattern, wanda_mask
from slimkit.prune.wanda import WandaConfig
from tests._models import tiny_llama, token_batches


def inputs(rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, cols, generator=g, dtype=torch.float64) * torch.rand(cols, generator=g, dtype=torch.float64)
    return torch.randn(rows, cols, generator=g), x


@pytest.mark.parametrize("rows, cols, sparsity", [(8, 30, 0.5), (16, 97, 0.6), (5, 64, 0.7)],
                         ids=["30-50", "97-60", "64-70"])
def test_prunes_lowest_scores_per_row_exactly(rows, cols, sparsity):
    w, x = inputs(rows, cols)
    keep = wanda_mask(w, x.norm(dim=0), SparsityPattern(sparsity))
    k = round(sparsity * cols)
    assert torch.all((~keep).sum(1) == k)
    scores = w.double().abs() * x.norm(dim=0)  # (rows, cols) float64 reference
    for r in range(rows):
        dropped, kept = scores[r][~keep[r]], scores[r][keep[r]]
        assert dropped.max() <= kept.min()


def test_n_m_groups_keep_their_highest_scores():
    w, x = inputs(6, 32, seed=1)
    keep = wanda_mask(w, x.norm(dim=0), SparsityPattern(n=2, m=4))
    assert torch.all(keep.reshape(6, 8, 4).sum(-1) == 2)
    scores = (w.double().abs() * x.norm(dim=0)).reshape(6, 8, 4)
    kept = torch.where(keep.reshape(6, 8, 4), scores, torch.inf).amin(-1)
    dropped = torch.where(~keep.reshape(6, 8, 4), scores, -torch.inf).amax(-1)
    assert torch.all(dropped <= kept)


def test_differs_from_magnitude_when_inputs_are_uneven():
    w = torch.ones(1, 4)
    keep = wanda_mask(w, torch.tensor([1.0, 5.0, 0.1, 3.0]), SparsityPattern(0.5))
    assert keep.tolist() == [[False, True, False, True]]


def test_apply_prunes_every_row_exactly_and_keeps_other_weights():
    model, ids = tiny_llama(), token_batches(n=4)
    original = {n: p.clone() for n, p in model.named_parameters()}

    def loop(m):
        for batch in ids.split(2):
            m(input_ids=batch)

    report = slimkit.apply(model, WandaConfig(sparsity=0.5), loop)
    assert report.stats["sparsity"] == 0.5
    for name, p in model.named_parameters():
        if name.endswith("proj.weight"):
            assert torch.all((p == 0).sum(1) == p.shape[1] // 2)
            assert torch.equal(p[p != 0], original[name][p != 0])  # no weight update
        else:
            assert torch.equal(p, original[name])
