"""YAML recipes: ``version``, a list of ``steps`` (each a registered method and its config fields),
and optional ``eval``, ``train`` and ``export`` sections. ``export: {format: NAME, options: {...}}`` adds a
file in a registered export format (ONNX, GGUF, ...) beside the slimkit output ``slimkit compress`` writes.

Every error names the file, the step and the key, so a user can fix a recipe without reading code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from slimkit.config import BaseConfig, FrozenModel
from slimkit.eval.evaluate import EvalConfig
from slimkit.export.formats import export_format, parse_options
from slimkit.method import config_class, method_name, registered_configs, registered_names
from slimkit.train.recipe_training import TrainSection

RECIPE_VERSION = 1


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, step and key."""


class ExportConfig(FrozenModel):
    """How the compressed model is written. The slimkit packed directory (``slimkit.json`` +
    ``slimkit.safetensors``, loadable with ``slimkit.load``) is always written; ``format`` names a
    registered export format (:mod:`slimkit.export.formats`: ONNX, GGUF, ...) to write beside it as
    ``model<suffix>``, checked by that format's real reader, and ``options`` are that format's options."""

    format: str = "slimkit"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value != "slimkit":
            export_format(value)  # raises, listing the known formats
        return value

    @model_validator(mode="after")
    def _options_fit(self) -> ExportConfig:
        if self.format == "slimkit":
            if self.options:
                raise ValueError("the slimkit format takes no options")
        else:
            parse_options(export_format(self.format), self.options)
        return self


class Recipe(FrozenModel):
    """A parsed, validated recipe."""

    version: int = RECIPE_VERSION
    steps: tuple[BaseConfig, ...] = Field(min_length=1)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainSection | None = None
    export: ExportConfig = Field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        out = {"version": self.version, "steps": [s.describe() for s in self.steps],
               "eval": self.eval.model_dump(mode="json"), "export": self.export.model_dump(mode="json")}
        if self.train is not None:
            out["train"] = self.train.model_dump(mode="json", exclude_none=True)
        return out


def _where(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(step)"
        parts.append(f"key '{loc}': {e['msg']}")
    return "; ".join(parts)


def _parse_step(raw: Any, index: int, source: str) -> BaseConfig:
    if not isinstance(raw, dict) or "method" not in raw:
        raise RecipeError(f"{source}: steps[{index}] must be a mapping with a 'method' key")
    name = raw["method"]
    try:
        cls = config_class(str(name))
    except KeyError:
        raise RecipeError(f"{source}: steps[{index}]: unknown method {name!r}; known methods: "
                          f"{', '.join(registered_names())}") from None
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(f"{source}: steps[{index}] ({name}): {_where(err)}") from None


def recipe_from_dict(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe given as plain data (e.g. parsed YAML)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping with 'version' and 'steps'")
    unknown = set(data) - {"version", "steps", "eval", "train", "export"}
    if unknown:
        raise RecipeError(f"{source}: unknown top-level key(s) {sorted(map(str, unknown))}; allowed: version, "
                          "steps, eval, train, export")
    version = data.get("version", RECIPE_VERSION)
    if type(version) is not int or version != RECIPE_VERSION:  # `version: true` is not 1
        raise RecipeError(f"{source}: recipe version {version!r} is not supported (expected "
                          f"{RECIPE_VERSION})")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise RecipeError(f"{source}: 'steps' must be a non-empty list")
    parsed = tuple(_parse_step(s, i, source) for i, s in enumerate(steps))
    sections: dict[str, Any] = {}
    for key, cls in (("eval", EvalConfig), ("export", ExportConfig), ("train", TrainSection)):
        if key == "train" and data.get(key) is None:
            continue
        try:
            sections[key] = cls.model_validate(data.get(key) or {})
        except ValidationError as err:
            raise RecipeError(f"{source}: section '{key}': {_where(err)}") from None
    _check_training(parsed, "train" in sections, source)
    return Recipe(version=RECIPE_VERSION, steps=parsed, **sections)


def _check_training(steps: tuple[BaseConfig, ...], has_train: bool, source: str) -> None:
    """Training methods need a ``train`` section, and a ``train`` section needs a method that trains."""
    training = [f"steps[{i}] ({method_name(type(s))})" for i, s in enumerate(steps) if s.needs_training]
    if training and not has_train:
        raise RecipeError(f"{source}: {', '.join(training)} train(s) the model while compressing; add a 'train:' "
                          "section (e.g. train: {epochs: 3}) saying what to train on and for how long")
    if has_train and not training:
        trainers = ", ".join(method_name(c) for c in registered_configs() if c.needs_training)
        raise RecipeError(f"{source}: section 'train' is given but no step trains (methods that do: {trainers})")


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise RecipeError(f"{path}: cannot read recipe ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not a text file (byte {err.start}: {err.reason}); a recipe is UTF-8 YAML") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: e.g. a date like 2024-13-45
        raise RecipeError(f"{path}: invalid YAML ({err})") from None
    return recipe_from_dict(data, str(path))
