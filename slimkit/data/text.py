"""Text corpora and tokenised windows for language models.

Calibration, validation and evaluation always use disjoint parts of a corpus ("calib", "val" and
"eval" splits), so a calibrated method cannot look good by memorising the evaluation text, and a
setting chosen on "val" (an alpha, a variant to fine-tune) is not chosen on the text it is judged on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from slimkit.data.spec import DataSpec, hf_parts

Split = Literal["calib", "val", "eval"]
_EVAL_EVERY = 4  # every 4th document goes to the evaluation split
_VAL_EVERY = 8  # of the others, every 8th document (counted over the whole corpus) goes to validation


def _split_of(index: int) -> Split:
    if index % _EVAL_EVERY == 0:
        return "eval"
    return "val" if index % _VAL_EVERY == _EVAL_EVERY // 2 else "calib"


def _split_docs(docs: list[str], split: Split) -> list[str]:
    """Disjoint, deterministic splits: 1/4 of the documents evaluate, 1/8 validate, 5/8 calibrate."""
    if len(docs) < 2:
        # One document: the first 5/8 calibrates, the next 1/8 validates, the last 1/4 evaluates.
        text = docs[0] if docs else ""
        cuts = {"calib": (0, 5), "val": (5, 6), "eval": (6, 8)}[split]
        return [text[len(text) * cuts[0] // 8: len(text) * cuts[1] // 8]]
    return [d for i, d in enumerate(docs) if _split_of(i) == split]


def _carve_validation(train_docs: list[str], split: Split) -> list[str]:
    """A data set with only train/validation splits: validation evaluates, its train split is cut into
    calibration (7/8) and our own validation (1/8), so settings are never chosen on the evaluation text."""
    return [d for i, d in enumerate(train_docs) if (i % _VAL_EVERY == _VAL_EVERY - 1) == (split == "val")]


def pydoc_documents() -> list[str]:
    """The pydoc help topics, in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _read_text_file(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        docs = []
        for lineno, line in enumerate(_read_utf8(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{lineno}: each JSONL record needs a string 'text' field")
            docs.append(record["text"])
        return docs
    return [_read_utf8(path)]


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); text data must be .txt or "
                         ".jsonl in UTF-8") from None


def text_file_documents(path_str: str) -> list[str]:
    """Documents from a .txt/.jsonl file or every such file in a directory (sorted)."""
    path = Path(path_str).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl"))
        if not files:
            raise FileNotFoundError(f"{path}: no .txt or .jsonl files in this directory")
        return [d for f in files for d in _read_text_file(f)]
    if not path.is_file():
        raise FileNotFoundError(f"text data {path} does not exist")
    return _read_text_file(path)


def hf_documents(arg: str, split: Split) -> list[str]:
    """Documents of a Hugging Face dataset from the local cache (no download)."""
    name, config, hf_split = hf_parts(arg)
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise ImportError("hf: data needs the 'datasets' package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, config, split=hf_split or ("validation" if split == "eval" else "train"))
    except Exception as err:  # noqa: BLE001 - datasets raises many types when offline
        raise RuntimeError(f"hf:{arg}: could not load the dataset offline ({type(err).__name__}: {err}). "
                           "slimkit never downloads; cache it first or use text:PATH") from None
    column = "text" if "text" in ds.column_names else ds.column_names[0]
    return [str(x) for x in ds[column]]


def documents(spec: DataSpec, split: Split) -> list[str]:
    """The documents of ``spec``'s ``split``."""
    if spec.kind == "pydoc":
        return _split_docs(pydoc_documents(), split)
    if spec.kind == "text":
        assert spec.arg is not None
        return _split_docs(text_file_documents(spec.arg), split)
    if spec.kind == "hf":
        assert spec.arg is not None
        if split == "eval":
            return hf_documents(spec.arg, "eval")
        return _carve_validation(hf_documents(spec.arg, "calib"), split)
    raise ValueError(f"{spec} is not a text data set")


def token_windows(tokenizer: Any, docs: list[str], seq_len: int, count: int) -> Tensor:
    """Up to ``count`` non-overlapping windows of ``seq_len`` tokens, shape (n, seq_len).

    The documents are joined with blank lines and tokenised once, so windows cross document borders
    like a continuous stream (the usual perplexity protocol).
    """
    ids = tokenizer("\n\n".join(docs), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    n = min(count, ids.numel() // seq_len)
    if n == 0:
        raise ValueError(f"the text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    return ids[: n * seq_len].reshape(n, seq_len).to(torch.long)


def sentences(docs: list[str], count: int, min_chars: int = 30, max_chars: int = 400) -> list[str]:
    """Up to ``count`` sentence-like snippets (for embedding fidelity)."""
    out: list[str] = []
    for doc in docs:
        for piece in re.split(r"(?<=[.!?])\s+|\n\s*\n", doc):
            piece = " ".join(piece.split())
            if min_chars <= len(piece) <= max_chars:
                out.append(piece)
                if len(out) >= count:
                    return out
    return out
