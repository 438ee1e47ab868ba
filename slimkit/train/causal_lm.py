"""A short next-token fine-tuning loop for causal LMs (recovery after structured pruning).

Plain AdamW on token windows with ``labels = input_ids`` (the model's own shifted cross-entropy),
a linear warm-down of the learning rate and an optional wall-clock budget, so a benchmark can say
"a few minutes of recovery" and mean it. A seed fixes the window order (reshuffled on every pass) and
the randomness inside the model during the run (dropout), so a run can be repeated exactly; the first
non-finite loss stops the run, naming its step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from slimkit.numerics import check_finite_loss
from slimkit.progress import progress_bar


def _window_order(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches of window indices: every pass over the ``n`` windows in a fresh random order."""
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)


def finetune_causal_lm(model: nn.Module, windows: Tensor, steps: int, lr: float = 5e-5, batch_size: int = 1,
                       max_seconds: float | None = None, on_step: Callable[[float], None] | None = None,
                       seed: int = 0) -> list[float]:
    """Fine-tune ``model`` in place on ``windows`` (n, T), cycling through them; returns the step losses.

    Args:
        model: a transformers causal LM (accepts ``labels=`` and returns ``.loss``).
        windows: token ids (n, T).
        steps: optimizer steps (each on ``batch_size`` windows).
        lr: peak AdamW learning rate, decayed linearly to zero over ``steps``.
        batch_size: windows per step.
        max_seconds: stop early once this much wall-clock time has passed.
        on_step: called with training progress in (0, 1] after each optimizer step (a controller's ``step``).
        seed: seeds the window order and, for the run only, torch's global generator (dropout).

    Raises:
        NonFiniteError: a step's loss is NaN or infinite; the run stops there and its weights should not be used.
    """
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(steps, 1)))
    order = _window_order(len(windows), batch_size, torch.Generator().manual_seed(seed))
    start, losses = time.perf_counter(), []
    model.train()
    # fork_rng: the seed governs dropout during this run without changing the caller's random state.
    with torch.random.fork_rng(devices=[]), progress_bar("fine-tuning", steps) as advance:
        torch.manual_seed(seed)
        for step in range(steps):
            batch = windows[next(order)]  # (B, T)
            loss = model(input_ids=batch, labels=batch).loss
            check_finite_loss(float(loss.detach()), step + 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            advance(1)
            if on_step is not None:
                on_step((step + 1) / steps)
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    model.eval()
    model.zero_grad(set_to_none=True)
    return losses
