"""The ``distill:`` block of a recipe's ``train:`` section: who teaches, and with which losses.

With this block every training run of the recipe (QAT, gradual pruning, centroid fine-tuning, the
``train.finetune`` recovery step) minimises the distillation loss instead of the model's own loss.

* ``teacher``: a model spec (see :func:`slimkit.models.load_model`); by default the input model as it was
  before the recipe's first step, so a compressed model learns from its own uncompressed original.
* ``student``: a model spec or a registered architecture (``mlp[hidden=30]``) that replaces the input
  model as the model the recipe compresses and trains; the input model then teaches (unless ``teacher``
  names another). Without it the input model itself is the student.
* ``temperature``, ``alpha``: the soft term is ``T² · KL`` at temperature ``T``; the loss is
  ``alpha · soft + (1 − alpha) · hard``. ``hard_targets`` picks the hard term's targets: the data's
  ``labels`` (next tokens for language models) or the ``teacher``'s argmax.
* ``features``: pairs of module names (student, teacher) whose outputs are matched by MSE, through a
  learned linear projection when their widths differ, each with a ``weight``.
* ``attention``: pairs of layer indices whose self-attention maps are matched (KL), each with a ``weight``;
  transformers only (both models then run eager attention during training).

* ``control``: also train a copy of the student through the same steps with its own loss (labels / next
  tokens; same data, steps, seed) and report teacher, student without distillation and distilled student
  side by side. Costs a second training run; not available for sentence-transformers (no labels).

Sentence-transformer students match the teacher's sentence embeddings (cosine loss); ``alpha``,
``temperature`` and ``hard_targets`` apply to models with logits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from slimkit.config import FrozenModel


class FeaturePair(FrozenModel):
    """Match the output of the student's module ``student`` to the teacher's module ``teacher``."""

    student: str
    teacher: str
    weight: float = Field(1.0, gt=0.0)


class AttentionPair(FrozenModel):
    """Match the self-attention maps of student layer ``student`` to those of teacher layer ``teacher``."""

    student: int = Field(ge=0)
    teacher: int = Field(ge=0)
    weight: float = Field(1.0, gt=0.0)


class DistillSection(FrozenModel):
    """A recipe's ``train.distill`` block (see the module docstring)."""

    teacher: str | None = None
    student: str | None = None
    temperature: float = Field(2.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    hard_targets: Literal["labels", "teacher"] = "labels"
    features: tuple[FeaturePair, ...] = ()
    attention: tuple[AttentionPair, ...] = ()
    control: bool = False
