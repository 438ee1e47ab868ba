"""ModelBundle: a model plus what is needed to run, evaluate and save it.

A bundle keeps together the ``nn.Module`` being compressed, what kind of model it is (which decides
the default metric and how it is saved), its tokenizer and where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

ModelKind = Literal["causal-lm", "encoder", "seq-cls", "sentence-transformer", "torch"]
MODEL_KINDS: tuple[str, ...] = ("causal-lm", "encoder", "seq-cls", "sentence-transformer", "torch")


@dataclass
class ModelBundle:
    """A loaded model and its companions.

    Attributes:
        model: the module that methods compress (for sentence-transformers, the whole pipeline).
        kind: what the model is; decides the default metric and the saver.
        source: what the user named (short name, path or slimkit directory).
        tokenizer: the text tokenizer for language models, else ``None``.
        arch: for plain torch models, ``{"name": ..., "kwargs": {...}}`` from the architecture registry.
        applied: the steps already applied (filled when loading a slimkit output).
        original: the model this one was converted from (e.g. a Keras model, see
            :mod:`slimkit.models.keras_in`): ``name`` and ``run(inputs) -> outputs`` on numpy arrays in this
            model's input layout, so ``compress`` can report how far the conversion moved the outputs.
    """

    model: nn.Module
    kind: ModelKind
    source: str
    tokenizer: Any = None
    arch: dict[str, Any] | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)
    origin: str | None = None
    original: Any = None

    @property
    def is_language_model(self) -> bool:
        return self.kind == "causal-lm"

    @property
    def root_source(self) -> str:
        """The original model this bundle descends from (for before/after comparisons)."""
        return self.origin or self.source
