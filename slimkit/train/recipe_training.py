"""The training run a recipe's ``train:`` section describes, for methods that learn while they compress.

``quant.qat`` and ``prune.gradual`` only make sense inside a training loop (fake-quant weights adapt
to their grid; masks tighten while the surviving weights recover). API users drive them from their
own loop with ``slimkit.prepare(...).step(progress)``; ``slimkit compress`` runs this loop instead:
the model's own loss on the training split of the data spec (next-token cross-entropy on token
windows for causal LMs, cross-entropy on labelled images for torch classifiers), with the method's
``step(progress)`` called after every optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import Field
from torch import nn

from slimkit.config import FrozenModel
from slimkit.data.images import image_data
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.models.bundle import ModelBundle
from slimkit.train.causal_lm import finetune_causal_lm
from slimkit.train.classifier import TrainConfig, train_classifier

OnStep = Callable[[float], None]
#: ``trainer(model, on_step) -> losses``: trains ``model`` in place, calling ``on_step(progress)``.
Trainer = Callable[[nn.Module, OnStep], list[float]]

#: Defaults per model kind: (samples, batch size, learning rate). ``samples=None`` means the whole split.
_DEFAULTS: dict[str, tuple[int | None, int, float]] = {"causal-lm": (64, 4, 5e-5), "torch": (None, 128, 1e-3)}


class TrainSection(FrozenModel):
    """A recipe's ``train:`` section: what the training methods of the recipe train on, and how long.

    ``data`` defaults to the calibration data (``--calib``, else the eval data); causal LMs train on
    token windows of its calibration split, torch classifiers on its labelled ``train`` split.
    ``samples`` (windows or images; default 64 windows / the whole split), ``batch_size`` (4 / 128) and
    ``lr`` (5e-5 AdamW linearly decayed / 1e-3 AdamW cosine-decayed) default per model kind.
    ``max_seconds`` stops early; the method's schedule then jumps to its end before finalizing.
    ``seed`` fixes the order of the samples (and, for causal LMs, dropout), so a run repeats exactly.
    """

    data: str | None = None
    epochs: int = Field(1, ge=1)
    samples: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0.0)
    max_seconds: float | None = Field(None, gt=0.0)
    seed: int = 0


def build_trainer(bundle: ModelBundle, section: TrainSection, default_data: str, seq_len: int = 512) -> Trainer:
    """The training loop ``section`` describes for ``bundle``'s kind of model (its data is loaded now)."""
    if bundle.kind not in _DEFAULTS:
        raise ValueError(f"a recipe's train section can train causal LMs and torch classifiers, not a "
                         f"{bundle.kind} model; train it through the API (slimkit.prepare) instead")
    spec = parse_data_spec(section.data or default_data)
    samples, batch_size, lr = _DEFAULTS[bundle.kind]
    samples, batch_size = section.samples or samples, section.batch_size or batch_size
    lr = section.lr or lr
    if bundle.kind == "causal-lm":
        if not spec.is_text:
            raise ValueError(f"a language model trains on text, not {spec}")
        assert samples is not None  # causal LMs always have a window count (_DEFAULTS)
        windows = token_windows(bundle.tokenizer, documents(spec, "calib"), seq_len, samples)
        steps = section.epochs * math.ceil(len(windows) / batch_size)

        def train_lm(model: nn.Module, on_step: OnStep) -> list[float]:
            return finetune_causal_lm(model, windows, steps, lr=lr, batch_size=batch_size,
                                      max_seconds=section.max_seconds, on_step=on_step, seed=section.seed)

        return train_lm
    if spec.is_text:
        raise ValueError(f"a torch classifier trains on labelled images, not {spec}")
    x, y = image_data(spec.kind, spec.arg, "train")
    x, y = (x[:samples], y[:samples]) if samples else (x, y)
    config = TrainConfig(epochs=section.epochs, batch_size=batch_size, lr=lr, seed=section.seed,
                         max_seconds=section.max_seconds)

    def train_images(model: nn.Module, on_step: OnStep) -> list[float]:
        return train_classifier(model, x, y, config, on_step=on_step)

    return train_images
