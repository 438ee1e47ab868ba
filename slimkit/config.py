"""Configuration base classes shared by every compression method.

A config is frozen, validated data: it says *what* to do and never holds runtime state. Unknown keys
are errors, so a typo in a recipe fails loudly instead of silently doing nothing.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DEFAULT_MODULE_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv1D")


def _number_types(annotation: Any) -> set[type] | None:
    """``{int}``, ``{float}`` or both if ``annotation`` is a plain number field (``None`` allowed), else ``None``."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    members = tuple(get_args(m)[0] if get_origin(m) is Annotated else m for m in members)  # PositiveInt
    numbers = {m for m in members if m in (int, float)}
    return numbers if numbers and all(m in (int, float, type(None)) for m in members) else None


def _check_number(value: Any, numbers: set[type]) -> None:
    if isinstance(value, bool) or (float not in numbers and isinstance(value, (str, float))):
        # pydantic's lax mode reads `bits: true` as 1 and `bits: "4"` / `4.0` as 4; a recipe means none of these
        raise ValueError(f"expected {'a number' if float in numbers else 'an integer'}, got {value!r}")


class FrozenModel(BaseModel):
    """Pydantic base: immutable, strict about unknown keys and about numbers.

    Integer fields take only integers and number fields no booleans (``bits: true`` is an error, not
    1 bit); number fields still read strings, because YAML reads ``1e-4`` as one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        numbers = _number_types(annotation)
        if numbers is not None:
            _check_number(value, numbers)
        elif get_origin(annotation) is tuple and get_args(annotation) and isinstance(value, (list, tuple)):
            items = _number_types(get_args(annotation)[0])  # e.g. tuple[int, ...]
            for item in value if items else ():
                _check_number(item, items or set())
        return value


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
    ``version`` is the config's schema version: a step written for another version than the class's
    ``SCHEMA_VERSION`` is refused (as torchao's ``config_from_dict`` compares stored versions), never
    read as if it meant today's fields.
    """

    method: str
    version: int = 1
    targets: Targets = Field(default_factory=Targets)

    #: The schema version of this config class; bump it when a field changes meaning.
    SCHEMA_VERSION: ClassVar[int] = 1
    #: Whether the method needs calibration data (a ``forward_loop``) to run.
    needs_calibration: ClassVar[bool] = False
    #: Whether the method only makes sense inside a training loop (QAT, gradual pruning): a recipe with
    #: such a step needs a ``train:`` section.
    needs_training: ClassVar[bool] = False

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: int, info: ValidationInfo) -> int:
        if value != cls.SCHEMA_VERSION:
            method = info.data.get("method", cls.__name__)
            raise ValueError(f"{method} config version {value} is not supported: this slimkit reads version "
                             f"{cls.SCHEMA_VERSION} (re-create the step with this version's fields)")
        return value

    def describe(self) -> dict[str, Any]:
        """JSON-ready dict of the config, as recorded in ``slimkit.json``."""
        return self.model_dump(mode="json")
