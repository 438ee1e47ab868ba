"""Two processes on gloo with DistributedDataParallel take the same steps as one process on the same global
batches: DDP averages the gradients of the two halves of each batch (no hand-made exchange)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from slimkit.distill.objective import OwnLossObjective
from slimkit.distill.tasks import ClassifierTask
from slimkit.train.loop import LoopSettings, run_training

SETTINGS = LoopSettings(steps=12, batch_size=16, lr=1e-2, seed=3)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def _train() -> tuple[nn.Module, list[float]]:
    x, y = _data()
    model = _model()
    losses = run_training(OwnLossObjective(model, ClassifierTask()), len(y), lambda idx: (x[idx], y[idx]), SETTINGS)
    return model, list(losses)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, losses = _train()
        torch.save({"state": model.state_dict(), "losses": losses}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key])  # DDP keeps the replicas identical
    single, losses = _train()
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(losses), rtol=1e-4, atol=1e-5)
    assert ranks[0]["state"]["0.weight"].ne(_model().state_dict()["0.weight"]).any()  # it did train
