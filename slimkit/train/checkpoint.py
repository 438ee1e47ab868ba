"""Training checkpoints that survive ``kill -9``: the last state for resuming, the best weights by validation.

A checkpoint directory holds ``last/`` and ``best/``, each replaced atomically
(:func:`slimkit.atomic.atomic_directory`), so an interruption at any instant leaves the previous complete
checkpoint. ``last/`` has the objective's weights (student, learned projections, the parametrizations'
masks and scales) in ``model.safetensors``, the optimizer state and the random generator state in
``state.pt`` (read back with ``torch.load(weights_only=True)``: tensors and plain numbers only, no
pickled code), and the step, losses and validation history in ``meta.json``. ``meta.json`` also records a
fingerprint of the run (model, recipe, data); resuming a different run from it is refused, naming the
directory to delete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from slimkit.atomic import atomic_directory

MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "state.pt", "meta.json"


@dataclass
class RunState:
    """Where a training run stands: what a resumed run continues from."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    best_step: int | None = None
    best_val: float | None = None
    val_before: float | None = None  # validation loss before the first step
    seconds: float = 0.0


class Checkpoints:
    """The ``last`` and ``best`` checkpoints of one training run in ``directory``."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    @property
    def last(self) -> Path:
        return self.directory / "last"

    @property
    def best(self) -> Path:
        return self.directory / "best"

    def _meta(self, where: Path) -> dict[str, Any] | None:
        meta_file = where / META_FILE
        if not meta_file.is_file():
            return None
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(f"{self.directory}: holds a checkpoint of a different training run (other model, recipe "
                             "or data); delete the directory to start afresh, or rerun the command that wrote it")
        return meta

    def load_last(self, objective: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[RunState, Tensor] | None:
        """Restore weights and optimizer from ``last``; returns the run state and the random state, or None."""
        meta = self._meta(self.last)
        if meta is None:
            return None
        load_model(objective, str(self.last / MODEL_FILE), strict=True)
        extra = torch.load(self.last / STATE_FILE, weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        state = RunState(**{k: v for k, v in meta.items() if k != "fingerprint"})
        state.val = [(int(s), float(v)) for s, v in state.val]
        return state, extra["rng"]

    def save_last(self, objective: nn.Module, optimizer: torch.optim.Optimizer, state: RunState) -> None:
        """Write the resumable state atomically (the previous ``last`` stays until the new one is complete)."""
        with atomic_directory(self.last, overwrite=True) as tmp:
            save_model(objective, str(tmp / MODEL_FILE))
            torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, tmp / STATE_FILE)
            (tmp / META_FILE).write_text(json.dumps({"fingerprint": self.fingerprint, **asdict(state)}))

    def save_best(self, objective: nn.Module, step: int, val: float) -> None:
        with atomic_directory(self.best, overwrite=True) as tmp:
            save_model(objective, str(tmp / MODEL_FILE))
            (tmp / META_FILE).write_text(json.dumps({"fingerprint": self.fingerprint, "step": step, "val": val}))

    def load_best(self, objective: nn.Module) -> int | None:
        """Load the best weights into ``objective``; returns their step (None when there are none)."""
        meta = self._meta(self.best)
        if meta is None:
            return None
        load_model(objective, str(self.best / MODEL_FILE), strict=True)
        return int(meta["step"])
