"""The one data-spec syntax of the CLI and recipes.

``pydoc``                 English text shipped with every Python (``pydoc_data.topics``)
``text:PATH``             a .txt/.jsonl file or a directory of them
``hf:NAME[/CONFIG][:SPLIT]``  a Hugging Face dataset already in the local cache
``fashion-mnist[:DIR]``   Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)
``digits``                scikit-learn's bundled 8×8 digits
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DataKind = Literal["pydoc", "text", "hf", "fashion-mnist", "digits"]
TEXT_KINDS = ("pydoc", "text", "hf")
IMAGE_KINDS = ("fashion-mnist", "digits")


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: its kind and the argument after the colon (path, dataset name)."""

    kind: DataKind
    arg: str | None = None

    @property
    def is_text(self) -> bool:
        return self.kind in TEXT_KINDS

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``spec``; unknown kinds get an error listing the accepted forms."""
    kind, _, arg = spec.partition(":")
    if kind in ("pydoc", "digits") and not arg:
        return DataSpec(kind)  # type: ignore[arg-type]
    if kind == "fashion-mnist":
        return DataSpec("fashion-mnist", arg or None)
    if kind in ("text", "hf") and arg:
        return DataSpec(kind, arg)  # type: ignore[arg-type]
    raise ValueError(f"unknown data spec {spec!r}; use one of: pydoc, text:PATH, hf:NAME[/CONFIG][:SPLIT], "
                     "fashion-mnist[:DIR], digits")
