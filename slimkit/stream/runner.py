"""The streamed run: one decoder layer in memory at a time, checkpointed after each, resumable after a kill.

1. The skeleton (meta device) gets its embeddings, final norm and head from the checkpoint; the
   calibration loop and the evaluation windows run through it only as far as layer 0, whose inputs are
   captured (:func:`slimkit.calib.sequential.capture_block_inputs`) into activation streams: ``calib``,
   and ``eval_before`` / ``eval_after`` (the same windows through the original and the compressed layers).
2. For each layer: read it in float32, move ``eval_before`` through it, apply the recipe's steps
   (:class:`~slimkit.stream.layer_steps.LayerSteps`; the ``calib`` stream moves on right after the
   calibrated step), move ``eval_after`` through it, encode its tensors with the slimkit format's codecs,
   and publish the layer's checkpoint (:mod:`slimkit.stream.checkpoint`): encoded tensors, codec entries,
   the steps' running totals and every stream's hidden states. Then the layer is dropped.
3. The final norm and head turn both evaluation streams into perplexities (one window and 128 positions at
   a time, so the logits over the vocabulary never dominate the memory).

A rerun of the same job finds the finished layers, restores the streams and totals from the last one
and continues; the result is bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from slimkit.calib.sequential import capture_block_inputs
from slimkit.config import BaseConfig, Targets
from slimkit.export.codecs import compress_state_dict
from slimkit.export.registry import Entry, collect_notes
from slimkit.method import ForwardLoop, StepReport
from slimkit.models.arch import decoder_layers
from slimkit.models.lazy_safetensors import SafetensorsIndex, Source, StoredBytes, read_header
from slimkit.progress import console, progress_bar
from slimkit.stream.activations import ActivationStream
from slimkit.stream.checkpoint import CAPTURED, TENSORS_FILE, LayerCheckpoints
from slimkit.stream.layer_steps import LayerSteps, linear_targets
from slimkit.stream.skeleton import layer_prefixes, layer_view, load_layer, materialize_outer
from slimkit.targets import iter_targets

CALIB, EVAL_BEFORE, EVAL_AFTER = "calib", "eval_before", "eval_after"
#: Positions whose logits are computed at once in the final perplexity (128 × 49k vocabulary: 25 MB).
LOGIT_CHUNK = 128


@dataclass
class StreamResult:
    """What a streamed run produced: every tensor's codec entry and bytes, the steps' reports, the measurements."""

    entries: dict[str, Entry]  # in the model's state-dict order
    sources: dict[str, Source]  # stored tensors: in memory (outer) or byte ranges of the layer checkpoints
    steps: list[StepReport]
    perplexity_before: float
    perplexity_after: float
    params: int
    zeros: dict[str, int] = field(default_factory=dict)  # zeros/total of Linear weights, before and after
    resumed_from: int = 0
    layers: int = 0
    eval_seconds: float = 0.0


def _zero_counts(module: nn.Module) -> tuple[int, int]:
    """(zeros, total) over the Linear/Conv weights :func:`slimkit.eval.metrics.weight_sparsity` counts."""
    zeros = total = 0
    for t in iter_targets(module, Targets(exclude=())):
        if not t.param.is_meta:
            zeros += int((t.param == 0).sum())
            total += t.param.numel()
    return zeros, total


class StreamedRun:
    """One streamed compression of the checkpoint ``index`` into the work directory ``work``."""

    def __init__(self, skeleton: nn.Module, index: SafetensorsIndex, steps: tuple[BaseConfig, ...], work: Path, *,
                 spill: bool) -> None:
        self.model, self.index, self.work, self.spill = skeleton, index, Path(work), spill
        self.prefixes = layer_prefixes(skeleton)
        self.steps = LayerSteps(steps)
        self.streams: dict[str, ActivationStream] = {}
        self.last_calibrated = self._last_calibrated_layer()
        self.counts = {"zeros_before": 0, "zeros_after": 0, "total": 0}
        self.eval_seconds = 0.0
        self._eval_ids: list[Tensor] = []  # one (1, T) window of token ids per evaluation batch

    def _last_calibrated_layer(self) -> int:
        """The last layer the calibrated step touches: calibration batches need not move past it."""
        if self.steps.calibrated is None:
            return -1
        config = self.steps.steps[self.steps.calibrated]
        touched = [i for i, p in enumerate(self.prefixes)
                   if linear_targets(layer_view(p, decoder_layers(self.model)[i]), config)]
        return max(touched, default=-1)

    def capture(self, calib_loop: ForwardLoop | None, eval_windows: Tensor) -> str:
        """Materialize the outer tensors, capture layer 0's inputs of every stream; returns their digest."""
        materialize_outer(self.model, self.index, self.prefixes)
        captured = self.work / CAPTURED
        shutil.rmtree(captured, ignore_errors=True)
        first = decoder_layers(self.model)[0]
        if calib_loop is not None and self.last_calibrated >= 0:
            calib = ActivationStream(CALIB, spill=self.spill, directory=captured)
            capture_block_inputs(self.model, calib_loop, first, keep=calib.append)
            self.streams[CALIB] = calib
        before = ActivationStream(EVAL_BEFORE, spill=self.spill, directory=captured)
        self._eval_ids = list(eval_windows.split(1))

        def windows(model: nn.Module) -> None:
            for window in self._eval_ids:
                model(input_ids=window)

        capture_block_inputs(self.model, windows, first, keep=before.append)
        self.streams[EVAL_BEFORE], self.streams[EVAL_AFTER] = before, before.copy(EVAL_AFTER)
        return hashlib.sha256(json.dumps({n: s.digest() for n, s in self.streams.items()}).encode()).hexdigest()[:16]

    def run(self, checkpoints: LayerCheckpoints, calib_description: str) -> StreamResult:
        """Compress every layer not yet finished in ``checkpoints``, then measure; returns the result."""
        finished = checkpoints.open()
        if finished:
            self._resume(checkpoints, finished)
            console.print(f"resuming the streamed run after layer {finished - 1} "
                          f"({finished} of {len(self.prefixes)} layers were finished)")
        with progress_bar(f"streaming {calib_description}", total=len(self.prefixes), eta=True) as advance:
            advance(finished)
            for i in range(finished, len(self.prefixes)):
                self._layer(checkpoints, i)
                advance(1)
        return self._finish(checkpoints, finished)

    def _resume(self, checkpoints: LayerCheckpoints, finished: int) -> None:
        state = checkpoints.state(finished - 1)
        self.steps.restore(state["steps"])
        self.counts = state["counts"]
        self.eval_seconds = state["eval_seconds"]
        for name, stream in list(self.streams.items()):
            if name == CALIB and finished > self.last_calibrated:
                del self.streams[name]  # no layer left needs calibration batches
            else:
                stream.load(checkpoints.layer_dir(finished - 1))

    def _advance(self, name: str, layer: nn.Module, directory: Path, index: int) -> None:
        if name == CALIB and index >= self.last_calibrated:
            self.streams.pop(CALIB, None)  # no later layer is calibrated
            return
        start = time.perf_counter()
        self.streams[name].advance(layer, directory)
        if name != CALIB:
            self.eval_seconds += time.perf_counter() - start

    def _layer(self, checkpoints: LayerCheckpoints, i: int) -> None:
        prefix = self.prefixes[i]
        layer = load_layer(self.model, self.index, prefix, i)
        view = layer_view(prefix, layer)
        with checkpoints.writing(i) as tmp:
            zeros_before, total = _zero_counts(view)
            self._advance(EVAL_BEFORE, layer, tmp, i)
            calib = self.streams.get(CALIB)
            self.steps.apply(i, prefix, layer, view, calib if calib is not None else [],
                             lambda: self._advance(CALIB, layer, tmp, i))
            self._advance(EVAL_AFTER, layer, tmp, i)
            zeros_after, _ = _zero_counts(view)
            tensors, entries = compress_state_dict(view.state_dict(), collect_notes(view))
            save_file(tensors, str(tmp / TENSORS_FILE))
            for stream in self.streams.values():
                stream.save(tmp)
            self.counts = {"zeros_before": self.counts["zeros_before"] + zeros_before, "total": self.counts["total"]
                           + total, "zeros_after": self.counts["zeros_after"] + zeros_after}
            checkpoints.write_state(tmp, {"layer": i, "entries": entries, "steps": self.steps.state(),
                                          "counts": self.counts, "eval_seconds": self.eval_seconds})
        for stream in self.streams.values():
            stream.moved(tmp, checkpoints.layer_dir(i))
        if i > 0:
            checkpoints.drop_activations(i - 1, [CALIB, EVAL_BEFORE, EVAL_AFTER])

    def _finish(self, checkpoints: LayerCheckpoints, resumed_from: int) -> StreamResult:
        start = time.perf_counter()
        before = self._perplexity(self.streams[EVAL_BEFORE])
        after = self._perplexity(self.streams[EVAL_AFTER])
        self.eval_seconds += time.perf_counter() - start
        inside = tuple(f"{p}." for p in self.prefixes)
        outer_state = {k: v for k, v in self.model.state_dict().items() if not k.startswith(inside)}
        outer_tensors, outer_entries = compress_state_dict(outer_state, {})
        layer_entries: dict[str, Entry] = {}
        sources: dict[str, Source] = dict(outer_tensors)
        for i in range(len(self.prefixes)):
            layer_entries.update(checkpoints.state(i)["entries"])
            infos, _ = read_header(checkpoints.layer_dir(i) / TENSORS_FILE)
            sources.update({name: StoredBytes(info) for name, info in infos.items()})
        all_entries = {**outer_entries, **layer_entries}
        entries = {k: all_entries[k] for k in self.model.state_dict()}
        zeros_outer, total_outer = _zero_counts(self.model)
        counts = {"zeros_before": self.counts["zeros_before"] + zeros_outer,
                  "zeros_after": self.counts["zeros_after"] + zeros_outer, "total": self.counts["total"] + total_outer}
        params = sum({id(p): p.numel() for p in self.model.parameters()}.values())
        return StreamResult(entries, sources, self.steps.reports(), before, after, params, counts, resumed_from,
                            len(self.prefixes), self.eval_seconds)

    @torch.no_grad()
    def _perplexity(self, stream: ActivationStream) -> float:
        """Perplexity of the windows a stream carried through every layer (the NLL of every predicted token,
        as :func:`slimkit.eval.metrics.perplexity` sums it), one window and :data:`LOGIT_CHUNK` positions at a
        time: a window's logits over a 49k vocabulary would otherwise be the run's largest tensor."""
        norm: nn.Module = self.model.get_submodule("model.norm")
        head: nn.Module = self.model.get_output_embeddings()  # type: ignore[operator]
        total_nll, tokens = 0.0, 0
        for (hidden, _, _), ids in zip(stream, self._eval_ids, strict=True):
            h = norm(hidden)  # (1, T, C)
            for start in range(0, ids.shape[1] - 1, LOGIT_CHUNK):
                end = min(start + LOGIT_CHUNK, ids.shape[1] - 1)
                logits = head(h[:, start:end])  # (1, chunk, V): predictions of positions start+1 .. end
                target = ids[:, start + 1:end + 1].reshape(-1)
                total_nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target,
                                                   reduction="sum"))
                tokens += target.numel()
        try:
            return math.exp(total_nll / tokens)
        except OverflowError:
            return math.inf


def layers_spec(result: StreamResult) -> dict[str, Any]:
    """What the report says about the streamed run itself."""
    return {"layers": result.layers, "resumed_from_layer": result.resumed_from or None,
            "eval_seconds": round(result.eval_seconds, 1)}
