"""Train with a group-lasso penalty from the recipe's train section, then remove the units whose norm fell
below a threshold: the sparsity regularisers run from a recipe end to end."""

from __future__ import annotations

import pytest

import slimkit
import slimkit.recipe
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict
from tests._models import lenet_bundle


def _run(tmp_path, name: str, lam: float | None) -> slimkit.Report:
    train: dict = {"data": "digits", "epochs": 8, "lr": 0.003}
    if lam is not None:
        train["regularizer"] = {"kind": "group_lasso", "lam": lam}
    recipe = recipe_from_dict({"version": 1, "train": train, "eval": {"data": "digits", "latency": {"enabled": False}},
                               "steps": [{"method": "train.finetune"},
                                         {"method": "prune.structured", "importance": "l2", "threshold": 0.05}]})
    return compress(lenet_bundle(in_features=64), recipe, tmp_path / name)


def test_group_lasso_from_the_train_section_lets_a_threshold_remove_units(tmp_path):
    plain, lasso = _run(tmp_path, "plain", None), _run(tmp_path, "lasso", 0.01)
    assert plain.after.params == plain.before.params  # without the penalty no unit falls below the threshold
    assert lasso.after.params < 0.7 * plain.after.params  # the penalty drove whole neurons to ~zero norm
    assert lasso.after.value > 0.8  # and the network still classifies digits
    reloaded = slimkit.load(str(tmp_path / "lasso"))
    assert sum(p.numel() for p in reloaded.model.parameters()) == lasso.after.params


def test_a_regularizer_needs_a_known_kind_and_a_positive_lambda():
    with pytest.raises(slimkit.recipe.RecipeError, match=r"section 'train': key 'regularizer.lam'"):
        recipe_from_dict({"version": 1, "steps": [{"method": "train.finetune"}],
                          "train": {"regularizer": {"kind": "l1", "lam": 0}}}, "r.yaml")
