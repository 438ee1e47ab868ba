"""The hidden states that a list of batches carries from one decoder layer into the next, in RAM or on disk.

A streamed run keeps one :class:`ActivationStream` per use: calibration batches (the inputs GPTQ & co.
collect statistics on) and evaluation windows before and after compression. The keyword arguments a
layer takes besides its hidden states (rotary position embeddings, masks) are the same at every layer,
so they stay in RAM; only the hidden states change. Spilled streams keep them as one safetensors file
per batch and hold a single batch in memory at a time. Every layer's outputs are written into its
checkpoint directory (:mod:`slimkit.stream.checkpoint`), which is where a resumed run reads them back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from slimkit.calib.sequential import BlockInput, run_block

Extras = tuple[tuple[Any, ...], dict[str, Any]]  # (positional args after the hidden states, keyword args)


def _batch_file(directory: Path, j: int) -> Path:
    return directory / f"batch-{j:05d}.safetensors"


class ActivationStream:
    """The hidden states of every batch of one stream as they enter the current decoder layer.

    Args:
        name: the stream's name, also its sub-directory in checkpoints (``calib``, ``eval_before`` ...).
        spill: keep the hidden states on disk, one file per batch, instead of in RAM.
        directory: where a spilled stream writes the batches it captures.
    """

    def __init__(self, name: str, *, spill: bool, directory: Path | None = None) -> None:
        if spill and directory is None:
            raise ValueError(f"activation stream {name!r}: spilling needs a directory")
        self.name, self.spill = name, spill
        self.extras: list[Extras] = []
        self._hidden: list[Tensor] = []
        self._dir = directory / name if directory is not None else None
        self._digest = hashlib.sha256()
        if spill and self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.extras)

    def append(self, block_input: BlockInput) -> None:
        """Add one captured batch (hidden states, args, kwargs); its hidden states enter :meth:`digest`."""
        hidden, args, kwargs = block_input
        self._digest.update(str((tuple(hidden.shape), hidden.dtype)).encode())
        self._digest.update(hidden.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self.extras.append((args, kwargs))
        if self.spill:
            assert self._dir is not None
            save_file({"hidden": hidden.contiguous()}, str(_batch_file(self._dir, len(self.extras) - 1)))
        else:
            self._hidden.append(hidden)

    def digest(self) -> str:
        """A hash of every captured batch's hidden states: what the run calibrates or evaluates on."""
        return self._digest.hexdigest()[:16]

    def hidden(self, j: int) -> Tensor:
        if not self.spill:
            return self._hidden[j]
        assert self._dir is not None
        return load_file(str(_batch_file(self._dir, j)))["hidden"]

    def __iter__(self) -> Iterator[BlockInput]:
        for j, (args, kwargs) in enumerate(self.extras):
            yield self.hidden(j), args, kwargs

    def copy(self, name: str) -> ActivationStream:
        """A second stream starting from the same hidden states (evaluation before and after compression)."""
        twin = ActivationStream(name, spill=self.spill, directory=self._dir.parent if self._dir else None)
        twin.extras, twin._hidden, twin._dir = list(self.extras), list(self._hidden), self._dir
        return twin

    def advance(self, layer: nn.Module, checkpoint: Path) -> None:
        """Run ``layer`` on every batch: its outputs become the stream, and a spilled stream writes them into
        ``checkpoint`` (the layer's checkpoint directory being built)."""
        target = checkpoint / self.name
        if self.spill:
            target.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            for j, block_input in enumerate(self):
                out = run_block(layer, block_input)
                if self.spill:
                    save_file({"hidden": out.contiguous()}, str(_batch_file(target, j)))
                else:
                    self._hidden[j] = out  # the input is no longer needed: one copy of the stream in RAM
        if self.spill:
            self._dir = target

    def save(self, checkpoint: Path) -> None:
        """Write the current hidden states into ``checkpoint`` (spilled streams wrote them in :meth:`advance`)."""
        target = checkpoint / self.name
        if self.spill and self._dir == target:
            return
        target.mkdir(parents=True, exist_ok=True)
        for j in range(len(self)):
            save_file({"hidden": self.hidden(j).contiguous()}, str(_batch_file(target, j)))

    def load(self, checkpoint: Path) -> None:
        """Take the hidden states a finished layer's checkpoint holds (a resumed run)."""
        source = checkpoint / self.name
        missing = [j for j in range(len(self)) if not _batch_file(source, j).is_file()]
        if missing:
            raise ValueError(f"{source}: the checkpoint lacks the hidden states of batch {missing[0]}")
        if self.spill:
            self._dir = source
        else:
            self._hidden = [load_file(str(_batch_file(source, j)))["hidden"] for j in range(len(self))]

    def moved(self, old: Path, new: Path) -> None:
        """The checkpoint directory ``old`` was renamed to ``new`` (published): follow a spilled stream there."""
        if self._dir is not None and self._dir.parent == old:
            self._dir = new / self._dir.name
