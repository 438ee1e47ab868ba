"""The training run a recipe's ``train:`` section describes, for methods that learn while they compress.

``quant.qat``, ``prune.gradual``, ``cluster.finetune`` and ``train.finetune`` only make sense inside a
training loop. API users drive them from their own loop with ``slimkit.prepare(...).step(progress)``;
``slimkit compress`` runs this loop instead (:func:`slimkit.train.loop.run_training`, with the method's
``step(progress)`` after every optimizer step) on the training split of the data spec: token windows
for causal LMs, labelled images for torch classifiers, sentences for sentence-transformers.

The loss is the model's own (next-token or label cross-entropy), or, with a ``distill:`` block
(:mod:`slimkit.distill.section`), the distillation loss against a frozen teacher; a ``regularizer:``
adds ``λ ·`` an L1 or group-lasso penalty (:mod:`slimkit.prune.regularizers`) to every step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from slimkit.config import FrozenModel, Targets
from slimkit.distill.objective import DistillObjective, OwnLossObjective
from slimkit.distill.section import DistillSection
from slimkit.distill.tasks import task_for
from slimkit.models.bundle import ModelBundle
from slimkit.prune.regularizers import l1_penalty, model_group_lasso
from slimkit.train.data import training_data
from slimkit.train.loop import LoopSettings, run_training

OnStep = Callable[[float], None]
#: ``trainer(model, on_step) -> losses``: trains ``model`` in place, calling ``on_step(progress)``.
Trainer = Callable[[nn.Module, OnStep], list[float]]

#: Defaults per model kind: (samples, batch size, learning rate, decay). ``samples=None``: the whole split.
DEFAULTS: dict[str, tuple[int | None, int, float, Literal["linear", "cosine"]]] = {
    "causal-lm": (64, 4, 5e-5, "linear"), "torch": (None, 128, 1e-3, "cosine"),
    "sentence-transformer": (256, 16, 5e-5, "linear")}


class RegularizerSection(FrozenModel):
    """``λ · penalty`` added to every training step: ``l1`` (``Σ|w|`` over ``targets``) or ``group_lasso``
    (``Σ`` of unit norms over the ``structure``'s removable units), see :mod:`slimkit.prune.regularizers`."""

    kind: Literal["l1", "group_lasso"]
    lam: float = Field(gt=0.0)
    structure: Literal["sequential", "ffn", "heads", "query_heads"] = "sequential"
    targets: Targets = Field(default_factory=lambda: Targets(exclude=()))


class TrainSection(FrozenModel):
    """A recipe's ``train:`` section: what the training methods of the recipe train on, and how long.

    ``data`` defaults to the calibration data (``--calib``, else the eval data); causal LMs train on
    token windows of its calibration split, torch classifiers on its labelled ``train`` split,
    sentence-transformers on sentences of its calibration split. ``samples``, ``batch_size`` (the global
    batch, split across processes under torchrun) and ``lr`` (AdamW, decayed to zero) default per model
    kind (:data:`DEFAULTS`). ``max_seconds`` stops early; the method's schedule then jumps to its end
    before finalizing. ``seed`` fixes the order of the samples and dropout, so a run repeats exactly.
    ``eval_every`` measures the training loss on held-out validation samples (``val_samples``: the
    data's val split for text, the last tenth of the training images) every so many steps and at the end;
    ``keep_best`` ends with the weights of the best measurement. ``checkpoint_every`` steps (default: ten
    checkpoints per run, and the last step) the run is saved to ``checkpoint_dir`` (default: ``OUT.training``
    beside the output, removed once the output is written); the same command resumes from it.
    """

    data: str | None = None
    epochs: int = Field(1, ge=1)
    samples: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_seconds: float | None = Field(None, gt=0.0)
    seed: int = 0
    eval_every: int | None = Field(None, ge=1)
    val_samples: int | None = Field(None, ge=1)
    keep_best: bool = False
    checkpoint_every: int | None = Field(None, ge=1)
    checkpoint_dir: str | None = None
    distill: DistillSection | None = None
    regularizer: RegularizerSection | None = None


def _settings(section: TrainSection, kind: str, n: int, checkpoint_dir: Path | None,
              fingerprint: str) -> LoopSettings:
    _, batch_size, lr, schedule = DEFAULTS[kind]
    batch_size = section.batch_size or batch_size
    steps = section.epochs * math.ceil(n / batch_size)
    directory = Path(section.checkpoint_dir) if section.checkpoint_dir else checkpoint_dir
    return LoopSettings(steps=steps, batch_size=batch_size, lr=section.lr or lr, schedule=schedule,
                        weight_decay=section.weight_decay, seed=section.seed, max_seconds=section.max_seconds,
                        eval_every=section.eval_every, checkpoint_every=section.checkpoint_every
                        or max(1, math.ceil(steps / 10)), checkpoint_dir=directory, fingerprint=fingerprint,
                        keep_best=section.keep_best,
                        description="distilling" if section.distill else "training")


def _effective_weights(model: nn.Module, targets: Targets) -> list[Tensor]:
    """The weights ``targets`` selects as the model computes with them: a parametrized weight (a pruning
    mask, fake quantization) counts with its mask applied, which ``iter_targets`` (raw parameters) skips."""
    found = []
    for name, module in model.named_modules():
        # a parametrized Linear is a ParametrizedLinear subclass: match the classes it derives from
        if targets.module_types and not {c.__name__ for c in type(module).__mro__} & set(targets.module_types):
            continue
        for param in targets.params:
            fqn = f"{name}.{param}" if name else param
            hit = any(fnmatchcase(fqn, g) or fnmatchcase(name, g) for g in targets.include)
            if hit and not any(fnmatchcase(fqn, g) or fnmatchcase(name, g) for g in targets.exclude) \
                    and isinstance(getattr(module, param, None), Tensor):
                found.append(getattr(module, param))
    if not found:
        raise ValueError(f"train.regularizer: its targets {targets.model_dump()} select no weight of the model")
    return found


def _regularizer(section: RegularizerSection | None, model: nn.Module) -> Callable[[], Tensor] | None:
    if section is None:
        return None
    if section.kind == "l1":
        return lambda: section.lam * l1_penalty(_effective_weights(model, section.targets))
    return lambda: section.lam * model_group_lasso(model, section.structure)


def check_teacher(student: ModelBundle, teacher: ModelBundle) -> None:
    """A teacher must be the same kind of model and, for text, read the same tokens."""
    if teacher.kind != student.kind:
        raise ValueError(f"train.distill: the teacher ({teacher.source}) is a {teacher.kind} model, the student "
                         f"({student.source}) a {student.kind} model; both must be the same kind")
    vocab = [len(b.tokenizer) for b in (student, teacher) if b.tokenizer is not None and hasattr(b.tokenizer,
                                                                                                  "__len__")]
    if len(vocab) == 2 and vocab[0] != vocab[1]:
        raise ValueError(f"train.distill: the teacher's tokenizer has {vocab[1]} tokens and the student's {vocab[0]}; "
                         "distillation needs the same vocabulary")


def build_trainer(bundle: ModelBundle, section: TrainSection, default_data: str, seq_len: int = 512, *,
                  teacher: ModelBundle | None = None, checkpoint_dir: Path | None = None,
                  fingerprint: str = "") -> Trainer:
    """The training loop ``section`` describes for ``bundle``'s kind of model (its data is loaded now).

    Args:
        bundle: the model to train (its ``model`` is what the trainer will be given).
        section: the recipe's ``train:`` section.
        default_data: the data spec used when the section names none.
        seq_len: token window length for causal LMs.
        teacher: the frozen teacher, required when the section has a ``distill:`` block.
        checkpoint_dir: where to checkpoint when the section names no ``checkpoint_dir`` (None: nowhere).
        fingerprint: identifies the run, so a checkpoint of another run is never resumed.
    """
    task = task_for(bundle.kind)
    if section.distill is not None:
        if teacher is None:
            raise ValueError("train.distill: no teacher model was given to the trainer")
        check_teacher(bundle, teacher)
    elif bundle.kind == "sentence-transformer":
        task.own_loss(None, None)  # type: ignore[arg-type]  # raises: it needs a teacher, says how
    data = training_data(bundle, section.data or default_data, DEFAULTS[bundle.kind][0] if section.samples is None
                         else section.samples, seq_len, validation=section.eval_every is not None or section.keep_best,
                         val_samples=section.val_samples)
    settings = _settings(section, bundle.kind, data.n, checkpoint_dir, fingerprint)
    runs = 0  # a recipe may train more than once (pruning, then centroid fine-tuning): one checkpoint each

    def train(model: nn.Module, on_step: OnStep) -> list[float]:
        nonlocal runs
        runs += 1
        directory = settings.checkpoint_dir / f"run-{runs}" if settings.checkpoint_dir else None
        run_settings = dataclasses.replace(settings, checkpoint_dir=directory, fingerprint=f"{fingerprint}:run-{runs}")
        objective: DistillObjective | OwnLossObjective
        if section.distill is not None and teacher is not None:
            objective = DistillObjective(model, teacher.model, task, section.distill)
            objective.add_projections(data.batch_of(data.first_indices(settings.batch_size)))
        else:
            objective = OwnLossObjective(model, task)
        try:
            return run_training(objective, data.n, data.batch_of, run_settings, on_step, data.val_batches(),
                                _regularizer(section.regularizer, model))
        finally:
            objective.close()

    return train

