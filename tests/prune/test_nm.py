"""N:M masks: exactly n kept per group of m for Linear and Conv weights; the prune.nm method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.prune.nm import is_nm_sparse, magnitude_nm_mask, nm_mask
from slimkit.prune.nm_prune import NMPruneConfig
from tests._models import tiny_llama


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4), (3, 16)], ids=["2of4", "4of8", "1of4", "3of16"])
def test_nm_mask_keeps_exactly_n_per_group(n: int, m: int) -> None:
    scores = torch.randn(7, 64).abs()
    keep = nm_mask(scores, n, m)
    assert (keep.reshape(7, -1, m).sum(dim=2) == n).all()
    # the kept entries are the largest of their group
    grouped, kept = scores.reshape(7, -1, m), keep.reshape(7, -1, m)
    smallest_kept = torch.where(kept, grouped, torch.inf).amin(dim=2)
    largest_dropped = torch.where(kept, -torch.inf, grouped).amax(dim=2)
    assert (smallest_kept >= largest_dropped).all()


def test_conv_groups_run_along_input_channels() -> None:
    w = torch.randn(6, 8, 3, 3)
    keep = magnitude_nm_mask(w, 2, 4)
    per_group = keep.movedim(1, -1).reshape(6, 3, 3, 2, 4).sum(dim=-1)
    assert (per_group == 2).all()
    assert is_nm_sparse(w * keep, 2, 4)


def test_bad_widths_and_patterns_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        nm_mask(torch.ones(2, 6), 2, 4)
    with pytest.raises(ValueError, match="n < m"):
        NMPruneConfig(n=4, m=4)


def test_prune_nm_method_on_tiny_llama() -> None:
    model = tiny_llama()
    report = slimkit.apply(model, NMPruneConfig(n=2, m=4, targets={"include": ["model.layers.*"]}))
    assert report.stats["sparsity"] == pytest.approx(0.5)
    linears = [m for n_, m in model.named_modules() if isinstance(m, nn.Linear) and "layers" in n_]
    assert linears and all(is_nm_sparse(m.weight, 2, 4) for m in linears)
    assert not any(hasattr(m, "parametrizations") for m in linears)


def test_pattern_survives_fine_tuning_between_prepare_and_finalize() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    ctl = slimkit.prepare(model, NMPruneConfig(n=1, m=4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(32, 16)).pow(2).mean().backward()
        opt.step()
    ctl.finalize()
    assert is_nm_sparse(model[0].weight, 1, 4) and is_nm_sparse(model[2].weight, 1, 4)
