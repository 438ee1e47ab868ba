"""Gradual magnitude pruning: exact sparsity per update, masks fixed through optimizer steps, baking."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.prune.gradual import GradualPruneConfig
from tests._models import lenet_bundle


def _train_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(16, 784)), torch.randint(0, 10, (16,))).backward()
        opt.step()


def _zeros(model: nn.Module) -> list[float]:
    return [float((m.weight == 0).float().mean()) for m in model.modules() if isinstance(m, nn.Linear)]


def test_sparsity_follows_schedule_and_masks_stay_fixed() -> None:
    model = lenet_bundle().model
    cfg = GradualPruneConfig(final_sparsity=0.9, start=0.0, end=0.5, frequency=0.25)
    ctl = slimkit.prepare(model, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ctl.step(0.0)
    assert _zeros(model) == pytest.approx([0.0, 0.0, 0.0], abs=1e-3)
    ctl.step(0.25)
    mid = 0.9 - 0.9 * 0.5**3
    assert _zeros(model) == pytest.approx([mid] * 3, abs=1e-3)
    pruned_before = [m.weight == 0 for m in model.modules() if isinstance(m, nn.Linear)]
    _train_steps(model, opt, 5)
    pruned_after = [m.weight == 0 for m in model.modules() if isinstance(m, nn.Linear)]
    for before, after in zip(pruned_before, pruned_after, strict=True):
        assert after[before].all()  # pruned weights still exactly zero after optimizer steps
    ctl.step(0.6)
    assert _zeros(model) == pytest.approx([0.9] * 3, abs=1e-3)
    report = ctl.finalize()
    assert report.stats["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    assert set(model.state_dict()) == set(lenet_bundle().model.state_dict())


def test_pruned_weights_never_regrow() -> None:
    model = lenet_bundle().model
    ctl = slimkit.prepare(model, GradualPruneConfig(final_sparsity=0.8, end=1.0, frequency=0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    previous = None
    for i in range(11):
        ctl.step(i / 10)
        pruned = torch.cat([(m.weight == 0).reshape(-1) for m in model.modules() if isinstance(m, nn.Linear)])
        if previous is not None:
            assert pruned[previous].all()
        previous = pruned
        _train_steps(model, opt, 1)
    ctl.finalize()


def test_global_scope_hits_total_sparsity_with_uneven_layers() -> None:
    model = lenet_bundle().model
    with torch.no_grad():
        model[5].weight.mul_(100.0)  # the classifier becomes "important"
    report = slimkit.apply(model, GradualPruneConfig(final_sparsity=0.7, scope="global"))
    assert report.stats["sparsity"] == pytest.approx(0.7, abs=1e-5)
    assert _zeros(model)[2] < 0.1


def test_steps_unit_and_per_layer_overrides() -> None:
    model = lenet_bundle().model
    first = GradualPruneConfig(final_sparsity=0.9, start=0, end=10, frequency=5, total_steps=20,
                               targets={"include": ["1", "3"]})
    last = GradualPruneConfig(final_sparsity=0.5, start=0, end=10, frequency=5, total_steps=20,
                              targets={"include": ["5"]})
    ctls = [slimkit.prepare(model, c) for c in (first, last)]
    for ctl in ctls:
        ctl.step(0.5)  # step 10 of 20: the end of both schedules
    assert _zeros(model) == pytest.approx([0.9, 0.9, 0.5], abs=1e-3)
    with pytest.raises(ValueError, match="matched no parameter"):
        slimkit.prepare(model, GradualPruneConfig(final_sparsity=0.5, targets={"include": ["5"]}))
    for ctl in ctls:
        ctl.finalize()


def test_per_layer_recipe_drives_one_controller_per_step() -> None:
    from pathlib import Path

    recipe = slimkit.load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "gradual-per-layer.yaml")
    model = lenet_bundle().model
    ctls = [slimkit.prepare(model, step) for step in recipe.steps]
    for i in range(11):
        for ctl in ctls:
            ctl.step(i / 10)
    for ctl in ctls:
        ctl.finalize()
    assert _zeros(model) == pytest.approx([0.95, 0.95, 0.7], abs=1e-3)
