"""Recipes: every shipped recipe parses; malformed ones name the file, the step and the key."""

from pathlib import Path

import pytest

from slimkit.recipe import RecipeError, load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml")) + [ROOT / "slimkit" / "recipes" / "demo.yaml"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_parse(path):
    recipe = load_recipe(path)
    assert recipe.steps and recipe.to_dict()["steps"][0]["method"] == recipe.steps[0].method


def write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, fragment", [
    ("version: 1\nsteps:\n  - method: quant.rtn\n    bitz: 4\n", "steps[0] (quant.rtn): key 'bitz'"),
    ("version: 1\nsteps:\n  - method: quant.rtn\n    bits: eight\n", "key 'bits'"),
    ("version: 1\nsteps:\n  - method: quant.rtn\n  - method: prune.magic\n", "steps[1]: unknown method 'prune.magic'"),
    ("version: 1\nsteps: []\n", "'steps' must be a non-empty list"),
    ("version: 2\nsteps:\n  - method: quant.rtn\n", "version 2"),
    ("version: 1\nstep:\n  - method: quant.rtn\n", "unknown top-level key(s) ['step']"),
    ("version: 1\nsteps:\n  - bits: 4\n", "steps[0] must be a mapping with a 'method' key"),
    ("version: 1\nsteps:\n  - method: quant.rtn\neval:\n  windowz: 3\n", "section 'eval': key 'windowz'"),
    ("version: 1\nsteps: [\n", "invalid YAML"),
], ids=["unknown-key", "wrong-type", "unknown-method", "no-steps", "version", "top-key", "no-method",
        "eval-key", "yaml-syntax"])
def test_malformed_recipes_name_the_problem(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")


def test_recipe_targets_and_chains():
    recipe = recipe_from_dict({"version": 1, "steps": [
        {"method": "prune.magnitude", "sparsity": 0.5, "targets": {"include": "*.mlp.*"}},
        {"method": "quant.rtn", "bits": 4, "granularity": "group", "group_size": 64}]})
    assert recipe.steps[0].targets.include == ("*.mlp.*",)
    assert [s.method for s in recipe.steps] == ["prune.magnitude", "quant.rtn"]
