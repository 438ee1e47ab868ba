"""The one data-spec syntax of the CLI and recipes.

``pydoc``                 English text shipped with every Python (``pydoc_data.topics``)
``text:PATH``             a .txt/.jsonl file or a directory of them
``hf:NAME[/CONFIG][:SPLIT]``  a Hugging Face dataset already in the local cache; a namespaced
                          dataset is ``hf:ORG/NAME/CONFIG`` (``hf:ORG/NAME/`` for its default config),
                          because one slash always separates NAME and CONFIG
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


SPEC_FORMS = "pydoc, text:PATH, hf:NAME[/CONFIG][:SPLIT] (hf:ORG/NAME/CONFIG), fashion-mnist[:DIR], digits"


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``spec``; unknown kinds get an error listing the accepted forms."""
    kind, _, arg = spec.partition(":")
    if kind in ("pydoc", "digits") and not arg:
        return DataSpec(kind)  # type: ignore[arg-type]
    if kind == "fashion-mnist":
        return DataSpec("fashion-mnist", arg or None)
    if kind == "text" and arg:
        return DataSpec("text", arg)
    if kind == "hf" and arg:
        hf_parts(arg)  # refuse a malformed name now, not when the data is first read
        return DataSpec("hf", arg)
    raise ValueError(f"unknown data spec {spec!r}; use one of: {SPEC_FORMS}")


def hf_parts(arg: str) -> tuple[str, str | None, str | None]:
    """``(dataset name, config, split)`` of the argument of an ``hf:`` spec.

    ``NAME[/CONFIG][:SPLIT]``: one slash separates the dataset and its config
    (``wikitext/wikitext-2-raw-v1:test``); a namespaced dataset takes two (``ORG/NAME/CONFIG``, or
    ``ORG/NAME/`` for its default config). The rule depends on the text alone, never on what happens
    to be cached, so a spec means the same on every machine.
    """
    path, _, split = arg.partition(":")
    parts = path.split("/")
    if len(parts) > 3 or not all(parts[:-1]) or (len(parts) < 3 and not parts[-1]) or ":" in split:
        raise ValueError(f"hf:{arg}: expected hf:NAME[/CONFIG][:SPLIT] or hf:ORG/NAME/[CONFIG][:SPLIT]")
    name = "/".join(parts[:2]) if len(parts) == 3 else parts[0]
    config = parts[-1] if len(parts) > 1 else None
    return name, config or None, split or None
