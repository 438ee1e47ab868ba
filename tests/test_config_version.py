"""BaseConfig.version is checked: a step written for another schema version is refused, naming the method."""

import pytest
from pydantic import ValidationError

import slimkit
from slimkit.method import config_class, registered_names
from slimkit.recipe import RecipeError, recipe_from_dict


@pytest.mark.parametrize("method", sorted(registered_names()))
def test_every_method_refuses_another_schema_version(method):
    cls = config_class(method)
    with pytest.raises(ValidationError, match=rf"{method} config version 2 is not supported: this slimkit reads "
                                              rf"version {cls.SCHEMA_VERSION}"):
        cls.model_validate({"method": method, "version": cls.SCHEMA_VERSION + 1})


def test_the_supported_version_is_accepted_and_recorded():
    config = slimkit.RTNConfig(version=1)
    assert config.version == 1 and config.describe()["version"] == 1


def test_a_recipe_step_with_an_unknown_version_names_the_step():
    with pytest.raises(RecipeError, match=r"steps\[0\] \(quant\.gptq\).*version 7 is not supported"):
        recipe_from_dict({"version": 1, "steps": [{"method": "quant.gptq", "version": 7}]})
