"""Property tests: any YAML text or data given as a recipe either parses or raises one :class:`RecipeError`
naming the file, and YAML never constructs Python objects."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimkit.method import config_class, registered_names
from slimkit.recipe import RecipeError, load_recipe, recipe_from_dict

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SCALARS = st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | st.text(max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=6)


def parses_or_names_the_source(parse, source):
    try:
        parse()
    except RecipeError as err:
        assert source in str(err)


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_any_file_loads_or_is_a_recipe_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    parses_or_names_the_source(lambda: load_recipe(path), str(path))


@FUZZ
@given(data=VALUES)
def test_any_data_is_a_recipe_or_a_recipe_error(data):
    parses_or_names_the_source(lambda: recipe_from_dict(data, "fuzz.yaml"), "fuzz.yaml")


def step(method):
    """A step of a real method whose keys are mostly its own fields, with values of any type."""
    fields = sorted(config_class(method).model_fields) + ["bitz"]
    return st.dictionaries(st.sampled_from(fields), VALUES | SCALARS, max_size=4).map(
        lambda d: {**d, "method": method})


@FUZZ
@given(steps=st.lists(st.sampled_from(registered_names()).flatmap(step), min_size=1, max_size=3),
       sections=st.dictionaries(st.sampled_from(["eval", "train", "export", "version"]), VALUES, max_size=3))
def test_near_valid_recipes_are_recipes_or_recipe_errors(steps, sections):
    parses_or_names_the_source(lambda: recipe_from_dict({"version": 1, "steps": steps, **sections}, "fuzz.yaml"),
                               "fuzz.yaml")


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "version: 1\nsteps:\n  - !!python/object/apply:os.system ['touch {marker}']\n",
    "version: !!python/name:os.system\nsteps: []\n",
])
def test_yaml_tags_never_run_code(tmp_path, text):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(path)
    assert not marker.exists()
