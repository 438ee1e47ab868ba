"""A small, deterministic classifier training loop for benchmarks and examples.

``train_classifier`` runs mini-batch Adam (or SGD) on in-memory tensors and calls an optional
``on_step(progress)`` after every optimizer step: the hook through which a pruning controller's
``ctl.step(progress)`` rides along a fine-tuning run. ``extra_loss(model)`` adds a regulariser (L1,
group lasso) to every batch's loss. ``teacher=Teacher(model, T, alpha)`` makes it Hinton distillation: the
loss mixes the KL to the frozen teacher's softened outputs with the label cross-entropy, so a compressed
model and its dense control can both learn from the same trained model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.distill.losses import kd_kl, mix
from slimkit.numerics import check_finite_loss
from slimkit.progress import progress_bar


@dataclass(frozen=True)
class TrainConfig:
    """Epochs, batch size, learning rate (cosine-decayed to zero), the seed of the batch order, and an
    optional wall-clock budget after which training stops early."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    max_seconds: float | None = None


@dataclass(frozen=True)
class Teacher:
    """A frozen model whose temperature-softened outputs the student learns (``alpha`` of the loss)."""

    model: nn.Module
    temperature: float = 4.0
    alpha: float = 0.9


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig,
                     on_step: Callable[[float], None] | None = None,
                     extra_loss: Callable[[nn.Module], Tensor] | None = None,
                     teacher: Teacher | None = None) -> list[float]:
    """Train ``model`` on ``x`` (N, ...) and labels ``y`` (N,) in place; returns the mean loss per epoch.

    Args:
        model: the classifier; put in train mode for the run and eval mode afterwards.
        x: inputs.
        y: integer class labels.
        config: schedule and optimizer settings.
        on_step: called with training progress in (0, 1] after each optimizer step.
        extra_loss: ``fn(model) -> scalar`` added to the cross-entropy of every batch.
        teacher: distil from this model (kept in eval mode, no gradient) instead of labels alone.

    Raises:
        NonFiniteError: a step's loss is NaN or infinite (a diverging learning rate); the run stops there.
    """
    generator = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(y) // config.batch_size)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / total)))
    model.train()
    if teacher is not None:
        teacher.model.eval()  # dropout / batch-norm statistics of the teacher stay fixed
    losses, step, start = [], 0, time.perf_counter()

    def out_of_time() -> bool:
        return config.max_seconds is not None and time.perf_counter() - start > config.max_seconds

    with progress_bar("training", total) as advance:
        for _ in range(config.epochs):
            epoch_loss, seen = 0.0, 0
            for idx in _batches(len(y), config.batch_size, generator):
                logits = model(x[idx])
                loss = F.cross_entropy(logits, y[idx])
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher.model(x[idx])
                    loss = mix(kd_kl(logits, teacher_logits, teacher.temperature), loss, teacher.alpha)
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                check_finite_loss(float(loss.detach()), step + 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                advance(1)
                epoch_loss, seen = epoch_loss + float(loss.detach()) * len(idx), seen + len(idx)
                if on_step is not None:
                    on_step(step / total)
                if out_of_time():
                    break
            losses.append(epoch_loss / seen)
            if out_of_time():
                break
    model.eval()
    return losses
