"""Per-layer checkpoints of a streamed run, so a killed job continues from its last finished layer.

The work directory (``OUT.stream`` beside the output) holds ``run.json`` with the job's fingerprint (a
hash of the model's files, the recipe's steps and the captured calibration and evaluation inputs) and one
directory per finished decoder layer, ``layer-00003/``: its encoded tensors (``compressed.safetensors``),
``state.json`` (their codec entries, the methods' running totals, the counts for the report) and the
hidden states every activation stream carries into the next layer. Each layer directory is published
atomically (:func:`slimkit.atomic.atomic_directory`), so after ``kill -9`` at any instant the finished
layers are exactly those whose directories exist. A directory of another job (different fingerprint)
is refused, naming the directory to delete, never reused; the hidden states of all but the last
finished layer are deleted as the run goes on. The training checkpoints
(:mod:`slimkit.train.checkpoint`) follow the same rules.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimkit.atomic import atomic_directory, atomic_file

RUN_FILE, STATE_FILE, TENSORS_FILE = "run.json", "state.json", "compressed.safetensors"
#: Where a spilled run writes layer 0's captured inputs, before the fingerprint (which hashes them) is known.
CAPTURED = "captured"
#: Bumped when the layout of a layer directory changes: an older checkpoint is then another job's.
CHECKPOINT_VERSION = 1


def default_work_dir(out: Path) -> Path:
    """``OUT.stream`` beside the output directory."""
    return out.parent / f"{out.name}.stream"


class LayerCheckpoints:
    """The finished layers of one streamed job in ``directory``, keyed by ``fingerprint``."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = f"v{CHECKPOINT_VERSION}-{fingerprint}"

    def _refuse(self, why: str) -> ValueError:
        return ValueError(f"{self.directory}: {why}; delete the directory to start afresh, or rerun the command "
                          "that wrote it")

    @staticmethod
    def check_directory(directory: Path) -> None:
        """Refuse a ``directory`` holding files of something other than a streamed run (before a run writes there;
        a run's own captured inputs may already be there).

        Raises:
            ValueError: it has files but no ``run.json``.
        """
        directory = Path(directory)
        if directory.is_dir() and not (directory / RUN_FILE).is_file() and \
                any(p.name != CAPTURED for p in directory.iterdir()):
            raise ValueError(f"{directory}: holds files but no {RUN_FILE}, so it is not a slimkit streamed run's work "
                             "directory; move it away or choose another --out")
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"{directory}: exists and is not a directory; a streamed run keeps its checkpoints there")

    def open(self) -> int:
        """Create or check the work directory and return how many layers are finished (0 for a new job).

        Raises:
            ValueError: the directory belongs to another job (or is not a streamed run's work directory).
        """
        run = self.directory / RUN_FILE
        self.check_directory(self.directory)
        if run.is_file():
            try:
                found = json.loads(run.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                found = None
            if found != self.fingerprint:
                raise self._refuse("holds the checkpoint of a different streamed job (other model, recipe, calibration "
                                   "or evaluation data)")
        self.directory.mkdir(parents=True, exist_ok=True)
        for litter in self.directory.glob(".layer-*"):  # a layer being written when the job was killed
            shutil.rmtree(litter, ignore_errors=True)
        with atomic_file(run, overwrite=True) as tmp:  # never a half-written run.json
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint}))
        finished = 0
        while (self.layer_dir(finished) / STATE_FILE).is_file():
            finished += 1
        return finished

    def layer_dir(self, index: int) -> Path:
        return self.directory / f"layer-{index:05d}"

    @contextmanager
    def writing(self, index: int) -> Iterator[Path]:
        """A temporary directory that becomes ``layer-<index>`` only when the block completes."""
        with atomic_directory(self.layer_dir(index), overwrite=True) as tmp:
            yield tmp

    def write_state(self, directory: Path, state: dict[str, Any]) -> None:
        """``state.json`` of a layer being written; it carries the fingerprint, so the layer is this job's."""
        (directory / STATE_FILE).write_text(json.dumps({"fingerprint": self.fingerprint, **state}))

    def state(self, index: int) -> dict[str, Any]:
        """The ``state.json`` of finished layer ``index``.

        Raises:
            ValueError: it belongs to another job.
        """
        state: dict[str, Any] = json.loads((self.layer_dir(index) / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("fingerprint") != self.fingerprint:
            raise self._refuse(f"layer {index} was written by a different streamed job")
        return state

    def drop_activations(self, index: int, streams: list[str]) -> None:
        """Delete the hidden states kept by finished layer ``index`` once a later layer holds newer ones."""
        for name in streams:
            shutil.rmtree(self.layer_dir(index) / name, ignore_errors=True)

    def remove(self) -> None:
        """Delete the work directory (the output is written: nothing is left to resume)."""
        shutil.rmtree(self.directory, ignore_errors=True)
