"""Training and validation samples for a recipe's training run, by kind of model.

* causal LMs: token windows (n, T) of the data's calibration split; validation windows from its val split;
* torch classifiers: the labelled ``train`` split of an image set; validation is its last tenth, held out
  of training (the test split is never used to choose anything);
* sentence-transformers: sentences of the calibration split, tokenised per batch by the model's own
  tokenizer; validation sentences from the val split.

Samples stay in memory; ``batch_of(indices)`` builds one batch, so the training loop decides the order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from slimkit.data.images import image_data
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.models.bundle import ModelBundle

VAL_BATCH = 256  # validation images or sentences per forward pass
DEFAULT_VAL_TEXT = 16  # validation windows / sentences when val_samples is not given


@dataclass
class TrainingData:
    """``n`` training samples behind ``batch_of(indices)``, and held-out validation batches."""

    n: int
    batch_of: Callable[[Tensor], Any]
    validation: list[Any]

    def first_indices(self, batch_size: int) -> Tensor:
        return torch.arange(min(batch_size, self.n))

    def val_batches(self) -> list[Any]:
        return self.validation


def _image_data(spec_kind: str, arg: str | None, samples: int | None, validation: bool,
                val_samples: int | None) -> TrainingData:
    x, y = image_data(spec_kind, arg, "train")
    val: list[Any] = []
    if validation:
        held = val_samples or max(1, len(y) // 10)
        x, y, x_val, y_val = x[:-held], y[:-held], x[-held:], y[-held:]
        val = list(zip(x_val.split(VAL_BATCH), y_val.split(VAL_BATCH), strict=True))
    x, y = (x[:samples], y[:samples]) if samples else (x, y)
    return TrainingData(len(y), lambda idx: (x[idx], y[idx]), val)


def _text_windows(bundle: ModelBundle, spec: Any, samples: int, seq_len: int, validation: bool,
                  val_samples: int | None) -> TrainingData:
    windows = token_windows(bundle.tokenizer, documents(spec, "calib"), seq_len, samples)  # (n, T)
    val: list[Any] = []
    if validation:
        held = token_windows(bundle.tokenizer, documents(spec, "val"), seq_len, val_samples or DEFAULT_VAL_TEXT)
        val = list(held.split(4))
    return TrainingData(len(windows), lambda idx: windows[idx], val)


def _sentences(bundle: ModelBundle, spec: Any, samples: int, validation: bool,
               val_samples: int | None) -> TrainingData:
    tokenize: Any = bundle.model.tokenize  # sentence-transformers models tokenize themselves
    train = sentences(documents(spec, "calib"), samples)
    if not train:
        raise ValueError(f"{spec}: no sentences of 30-400 characters to train on")
    val: list[Any] = []
    if validation:
        held = sentences(documents(spec, "val"), val_samples or DEFAULT_VAL_TEXT)
        val = [tokenize(held[i:i + VAL_BATCH]) for i in range(0, len(held), VAL_BATCH)]
    return TrainingData(len(train), lambda idx: tokenize([train[int(i)] for i in idx]), val)


def training_data(bundle: ModelBundle, data: str, samples: int | None, seq_len: int, *, validation: bool,
                  val_samples: int | None = None) -> TrainingData:
    """The samples ``bundle`` trains on from data spec ``data`` (``samples``: how many, None = all)."""
    spec = parse_data_spec(data)
    if bundle.kind == "torch":
        if spec.is_text:
            raise ValueError(f"a torch classifier trains on labelled images, not {spec}")
        return _image_data(spec.kind, spec.arg, samples, validation, val_samples)
    if not spec.is_text:
        raise ValueError(f"a {bundle.kind} model trains on text, not {spec}")
    assert samples is not None  # text kinds always have a default count
    if bundle.kind == "causal-lm":
        return _text_windows(bundle, spec, samples, seq_len, validation, val_samples)
    return _sentences(bundle, spec, samples, validation, val_samples)
