"""One training loop for every recipe training run: progress, validation, best weights, resume, several processes.

``run_training(objective, n, batch_of, settings)`` minimises ``objective(batch)`` (a module returning the
loss: the model's own loss or distillation, :mod:`slimkit.distill.objective`) with AdamW.

* **Deterministic.** The samples of step ``k`` are a pure function of ``(seed, k)`` (one seeded
  permutation per pass over the data), the learning rate of ``k`` a pure function of ``k``, and torch's
  generator (dropout) is seeded once and saved with each checkpoint. So a run resumed from a checkpoint
  takes exactly the steps the uninterrupted run would have taken.
* **Survives interruption.** Every ``checkpoint_every`` steps and at the end, the weights, optimizer and
  random state are written atomically (:mod:`slimkit.train.checkpoint`); the same command finds them
  and continues from the saved step.
* **Validation.** Every ``eval_every`` steps (and at the end) the objective's mean loss on held-out
  batches is measured; the best weights are kept, and restored at the end with ``keep_best``.
* **Several processes.** Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1) the process group is
  initialised (gloo on CPU, NCCL on GPUs) and the objective is wrapped in ``DistributedDataParallel``:
  every step's batch is split across the processes and DDP averages the gradients, so N processes
  take the same steps on the same global batches as one. Only rank 0 writes checkpoints and draws the bar.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimkit.numerics import check_finite_loss
from slimkit.progress import console
from slimkit.train.checkpoint import Checkpoints, RunState
from slimkit.train.distributed import all_mean, barrier, ddp_wrap, rank_and_world
from slimkit.train.progress import training_bar

OnStep = Callable[[float], None]


@dataclass(frozen=True)
class LoopSettings:
    """Steps, batch, AdamW learning rate and its decay, seed, budget, validation and checkpoint cadence."""

    steps: int
    batch_size: int
    lr: float
    schedule: Literal["linear", "cosine"] = "linear"
    weight_decay: float = 0.0
    seed: int = 0
    max_seconds: float | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    checkpoint_dir: Path | None = None
    fingerprint: str = ""
    keep_best: bool = False
    description: str = "training"


class TrainLosses(list[float]):
    """The per-step losses (a list, as trainers return), plus what the run measured besides (``stats``)."""

    stats: dict[str, Any]


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Learning-rate multiplier of 0-based ``step``: linear or cosine decay from 1 to 0 over ``total`` steps."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    return max(0.0, 1.0 - step / total)


def step_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Sample indices of 0-based ``step``: pass ``step // steps_per_pass`` over a fresh seeded permutation."""
    per_pass = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_pass)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch_size:(k + 1) * batch_size]


def validation_loss(objective: nn.Module, batches: Sequence[Any]) -> float:
    """Mean objective loss over ``batches`` in eval mode (dropout off); the mode is restored after."""
    was_training = objective.training
    objective.eval()
    with torch.no_grad():
        value = sum(float(objective(b)) for b in batches) / len(batches)
    objective.train(was_training)
    return value


class _Best:
    """The best validation weights: in the checkpoint directory when there is one, else in memory."""

    def __init__(self, checkpoints: Checkpoints | None, rank: int) -> None:
        self.checkpoints, self.rank = checkpoints, rank
        self.memory: dict[str, Tensor] | None = None

    def save(self, objective: nn.Module, step: int, val: float) -> None:
        if self.checkpoints is None:
            self.memory = copy.deepcopy(objective.state_dict())
        elif self.rank == 0:
            self.checkpoints.save_best(objective, step, val)

    def restore(self, objective: nn.Module) -> None:
        barrier()
        if self.checkpoints is None:
            if self.memory is not None:
                objective.load_state_dict(self.memory)
        else:
            self.checkpoints.load_best(objective)


def run_training(objective: nn.Module, n: int, batch_of: Callable[[Tensor], Any], settings: LoopSettings,
                 on_step: OnStep | None = None, val_batches: Sequence[Any] = (),
                 extra_loss: Callable[[], Tensor] | None = None) -> TrainLosses:
    """Train ``objective``'s parameters in place; returns the step losses with the run's statistics.

    Args:
        objective: module whose ``forward(batch)`` returns the loss; everything trainable in it learns.
        n: number of training samples.
        batch_of: ``indices -> batch`` for this process's share of a step's samples.
        settings: schedule, cadence and checkpoint directory.
        on_step: called with progress in (0, 1] after each optimizer step (the methods' schedules).
        val_batches: held-out batches for periodic validation (none: no validation).
        extra_loss: ``() -> scalar`` added to every step's loss (a sparsity regulariser).

    Raises:
        NonFiniteError: a step's loss is NaN or infinite; the run stops there.
    """
    rank, world = rank_and_world()
    forward = ddp_wrap(objective)
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    checkpoints = Checkpoints(settings.checkpoint_dir, settings.fingerprint) if settings.checkpoint_dir else None
    loaded = checkpoints.load_last(objective, opt) if checkpoints else None
    state, rng = loaded if loaded else (RunState(), None)
    resumed_from = state.step if loaded else None
    if loaded and checkpoints and rank == 0:
        console.print(f"resuming from step {state.step} of {settings.steps} ({checkpoints.directory})")
    best = _Best(checkpoints, rank)
    total, start, done_here, seconds_before = settings.steps, time.perf_counter(), 0, state.seconds
    objective.train()
    with torch.random.fork_rng(devices=[]), training_bar(settings.description, total, state.step,
                                                         rank == 0) as bar:
        torch.manual_seed(settings.seed)
        if rng is not None:
            torch.set_rng_state(rng)
        if val_batches and state.step == 0:  # a resumed run keeps its checkpointed value
            state.val_before = validation_loss(objective, val_batches)  # what training starts from
        while state.step < total:
            step = state.step
            for group in opt.param_groups:
                group["lr"] = settings.lr * lr_factor(settings.schedule, step, total)
            idx = step_indices(n, settings.batch_size, settings.seed, step)
            loss = forward(batch_of(idx[rank::world]))
            if extra_loss is not None:
                loss = loss + extra_loss()
            value = all_mean(float(loss.detach()))
            check_finite_loss(value, step + 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state.step, done_here = step + 1, done_here + len(idx)
            state.losses.append(value)
            if on_step is not None:
                on_step(state.step / total)
            elapsed = seconds_before + time.perf_counter() - start
            out_of_time = settings.max_seconds is not None and elapsed > settings.max_seconds
            last = state.step == total or out_of_time
            if val_batches and (last or (settings.eval_every and state.step % settings.eval_every == 0)):
                state.val.append((state.step, validation_loss(objective, val_batches)))
                if state.best_val is None or state.val[-1][1] < state.best_val:
                    state.best_step, state.best_val = state.val[-1]
                    best.save(objective, *state.val[-1])
            if checkpoints and rank == 0 and (last or (settings.checkpoint_every
                                                       and state.step % settings.checkpoint_every == 0)):
                state.seconds = elapsed
                checkpoints.save_last(objective, opt, state)
            barrier()
            bar(value, done_here / max(time.perf_counter() - start, 1e-9))
            if out_of_time:
                break
    if settings.keep_best and state.best_step is not None:
        best.restore(objective)
    objective.eval()
    objective.zero_grad(set_to_none=True)
    return _result(state, resumed_from, settings)


def _result(state: RunState, resumed_from: int | None, settings: LoopSettings) -> TrainLosses:
    losses = TrainLosses(state.losses)
    losses.stats = {"train_resumed_from_step": resumed_from}
    if state.val_before is not None:
        losses.stats["val_loss_before"] = round(state.val_before, 4)
    if state.val:
        losses.stats.update({"val_loss_first": round(state.val[0][1], 4), "val_loss_last": round(state.val[-1][1], 4),
                             "val_loss_best": round(state.best_val or 0.0, 4), "val_best_step": state.best_step,
                             "kept_best": settings.keep_best})
    return losses
