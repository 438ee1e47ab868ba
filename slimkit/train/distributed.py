"""Data-parallel training on torch's own engine: ``torchrun`` sets the environment, DDP exchanges gradients.

Under ``torchrun --nproc_per_node=N`` every process runs the same command; :func:`init_from_env` joins
them in a process group (gloo on CPU, NCCL when CUDA is available) and :func:`ddp_wrap` wraps the
training objective in ``DistributedDataParallel``, which averages the gradients of all processes
during ``backward``. Nothing here exchanges gradients by hand. In one process every helper is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_from_env() -> None:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); nothing to do otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without a process group)."""
    init_from_env()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Rank 0, the one process that writes outputs, checkpoints and reports."""
    return rank_and_world()[0] == 0


def ddp_wrap(objective: nn.Module) -> nn.Module:
    """``objective`` wrapped in DistributedDataParallel when several processes train, else itself.

    ``find_unused_parameters``: a student may hold parameters the loss never reaches (a BERT pooler
    under a sentence embedding, frozen codebook indices); DDP must not wait for their gradients.
    """
    if rank_and_world()[1] == 1:
        return objective
    return nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)


def all_mean(value: float) -> float:
    """The mean of ``value`` over all processes (for logging one loss per step)."""
    if rank_and_world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def barrier() -> None:
    """Wait for every process (e.g. until rank 0 has written a checkpoint); no-op in one process."""
    if rank_and_world()[1] > 1:
        dist.barrier()
