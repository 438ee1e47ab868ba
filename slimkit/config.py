"""Configuration base classes shared by every compression method.

A config is frozen, validated data: it says *what* to do and never holds runtime state. Unknown keys
are errors, so a typo in a recipe fails loudly instead of silently doing nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MODULE_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv1D")


class FrozenModel(BaseModel):
    """Pydantic base: immutable, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Targets(FrozenModel):
    """Which parameters a method touches: one matching syntax for every method.

    A parameter is selected when its owning module's class name is in ``module_types`` (empty means
    any type), its own name is in ``params``, some ``include`` glob matches it and no ``exclude``
    glob does. A glob matches either the parameter's full name (``model.layers.0.mlp.up_proj.weight``)
    or its module's name (``model.layers.0.mlp.up_proj``), so ``lm_head`` and ``*.mlp.*`` both work.
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ("lm_head",)
    module_types: tuple[str, ...] = DEFAULT_MODULE_TYPES
    params: tuple[str, ...] = ("weight",)

    @field_validator("include", "exclude", "module_types", "params", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


class BaseConfig(FrozenModel):
    """Base of every method config: a registered ``method`` name, a schema version and targets.

    Subclasses set ``method`` as a ``Literal`` so a recipe step's ``method:`` key selects the class.
    """

    method: str
    version: int = 1
    targets: Targets = Field(default_factory=Targets)

    #: Whether the method needs calibration data (a ``forward_loop``) to run.
    needs_calibration: ClassVar[bool] = False
    #: Whether the method only makes sense inside a training loop (QAT, gradual pruning): a recipe with
    #: such a step needs a ``train:`` section.
    needs_training: ClassVar[bool] = False

    def describe(self) -> dict[str, Any]:
        """JSON-ready dict of the config, as recorded in ``slimkit.json``."""
        return self.model_dump(mode="json")
