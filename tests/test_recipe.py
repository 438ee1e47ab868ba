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


@pytest.mark.parametrize("text, fragment", [
    ("version: 1\nsteps:\n  - method: quant.rtn\n    bits: true\n", "key 'bits': Value error, expected an integer"),
    ("version: 1\nsteps:\n  - method: quant.rtn\n    bits: 4.0\n", "key 'bits': Value error, expected an integer"),
    ("version: 1\nsteps:\n  - method: prune.magnitude\n    sparsity: yes\n", "key 'sparsity': Value error"),
    ("version: 1\nsteps:\n  - method: quant.rtn\neval:\n  latency:\n    batch_sizes: [-1]\n",
     "key 'latency.batch_sizes.0': Input should be greater than 0"),
    ("version: 1\nsteps:\n  - method: quant.rtn\neval:\n  latency:\n    batch_sizes: [true]\n",
     "expected an integer, got True"),
    ("version: 1\nsteps:\n  - method: quant.rtn\neval:\n  windows: true\n", "key 'windows': Value error"),
    ("version: true\nsteps:\n  - method: quant.rtn\n", "recipe version True is not supported"),
    ("version: 1\nsteps:\n  - method: quant.rtn\nexport:\n  format: tflight\n",
     "unknown export format 'tflight'; known formats"),
    ("version: 1\nsteps:\n  - method: quant.rtn\n1: x\n", "unknown top-level key(s) ['1']"),
    ("version: 1\nsteps:\n  - method: quant.rtn\n    when: 2024-13-45\n", "invalid YAML"),
], ids=["bits-true", "bits-float", "sparsity-yes", "batch-negative", "batch-bool", "windows-true", "version-true",
        "export-format", "int-key", "bad-date"])
def test_numbers_are_strict_and_export_formats_are_named(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_floats_still_read_yaml_exponents_and_integers():
    recipe = recipe_from_dict({"version": 1, "steps": [{"method": "prune.magnitude", "sparsity": 1}],
                               "train": None})
    assert recipe.steps[0].sparsity == 1.0
    assert recipe_from_dict({"version": 1, "steps": [{"method": "prune.gradual", "final_sparsity": "5e-1"}],
                             "train": {"lr": "1e-4"}}).train.lr == 1e-4  # YAML 1.1 reads 1e-4 as a string


def test_a_binary_recipe_names_the_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x80\x04\x95" + bytes(range(256)))
    with pytest.raises(RecipeError, match=r"model.bin: not a text file"):
        load_recipe(path)


def test_the_export_section_defaults_to_the_slimkit_directory():
    assert recipe_from_dict({"version": 1, "steps": [{"method": "quant.rtn"}]}).export.format == "slimkit"
    assert recipe_from_dict({"version": 1, "steps": [{"method": "quant.rtn"}],
                             "export": {"format": "slimkit"}}).export.format == "slimkit"
