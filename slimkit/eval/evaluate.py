"""Measure a model the same way before and after compression.

An :class:`Evaluation` prepares its inputs once (token windows, sentences or images) and measures any
number of models on exactly those inputs: quality metric, parameters, sparsity, bytes on disk and
CPU latency. The first model measured is the reference for fidelity metrics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from pydantic import Field, PositiveInt
from torch import Tensor

from slimkit.config import FrozenModel
from slimkit.data.images import image_data
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, sentences, token_windows
from slimkit.eval.latency import Timing, time_workload
from slimkit.eval.metrics import accuracy, count_params, mean_cosine, non_finite_warning, perplexity, weight_sparsity
from slimkit.models.arch import torch_input_shape
from slimkit.models.bundle import ModelBundle
from slimkit.progress import progress_bar


class LatencyConfig(FrozenModel):
    """How CPU latency is measured: batch sizes, input length, warm-up and timed repeats."""

    enabled: bool = True
    batch_sizes: tuple[PositiveInt, ...] = Field((1,), min_length=1)
    seq_len: int = Field(128, ge=1)
    warmup: int = Field(2, ge=0)
    repeats: int = Field(5, ge=1)


class EvalConfig(FrozenModel):
    """What to evaluate on. ``data`` defaults to ``pydoc`` for text models, ``fashion-mnist`` for torch."""

    data: str | None = None
    windows: int = Field(16, ge=1)
    seq_len: int = Field(512, ge=2)
    samples: int = Field(256, ge=1)
    batch_size: int = Field(4, ge=1)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)


@dataclass
class Measurement:
    """Everything measured about one model."""

    metric: str
    value: float
    higher_is_better: bool
    params: int
    sparsity: float
    size_bytes: int | None = None
    latency: dict[str, Timing] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. a NaN metric; the report prints them

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["latency"] = {k: {**asdict(t), "throughput": t.throughput} for k, t in self.latency.items()}
        return out


def _check_images_fit(bundle: ModelBundle, sample: tuple[int, ...], data: str) -> None:
    """Refuse images whose shape the torch model cannot take (a 64-input MLP on 28×28 Fashion-MNIST),
    naming both shapes, instead of a matrix-size error from inside the model."""
    shape = torch_input_shape(bundle.model, bundle.arch)
    if shape is None or sample == shape or (len(shape) == 1 and math.prod(sample) == shape[0]):
        return
    raise ValueError(f"{bundle.source} takes inputs of shape {shape}, but the {data} images are {sample}; "
                     "evaluate it on data of its input size (--data, e.g. digits for 8×8 = 64 features)")


def default_data(bundle: ModelBundle) -> str:
    """The data spec a model is calibrated, trained and evaluated on when none is named."""
    return "fashion-mnist" if bundle.kind == "torch" else "pydoc"


class Evaluation:
    """Fixed evaluation inputs for one kind of model, reused for every model measured."""

    def __init__(self, bundle: ModelBundle, config: EvalConfig | None = None) -> None:
        self.config = config or EvalConfig()
        self.kind = bundle.kind
        self.spec = parse_data_spec(self.config.data or default_data(bundle))
        self.reference: Tensor | None = None
        self._prepare_inputs(bundle)

    def _prepare_inputs(self, bundle: ModelBundle) -> None:
        c = self.config
        if self.kind == "torch":
            self.images, self.labels = image_data(self.spec.kind, self.spec.arg, "test")
            _check_images_fit(bundle, tuple(self.images.shape[1:]), str(self.spec))
            return
        if not self.spec.is_text:
            raise ValueError(f"a {self.kind} model is evaluated on text; {self.spec} is an image data set")
        docs = documents(self.spec, "eval")
        if self.kind == "causal-lm":
            self.windows = token_windows(bundle.tokenizer, docs, c.seq_len, c.windows)
        else:
            self.sentences = sentences(docs, c.samples)

    @property
    def metric_name(self) -> str:
        return {"causal-lm": "perplexity", "torch": "accuracy"}.get(self.kind, "embedding_cosine")

    def quality(self, bundle: ModelBundle) -> float:
        """The kind's quality metric on the prepared inputs."""
        model, c = bundle.model, self.config
        if self.kind == "causal-lm":
            with progress_bar("perplexity", len(self.windows)) as advance:
                return perplexity(model, self.windows, c.batch_size, advance)
        if self.kind == "torch":
            return accuracy(model, self.images, self.labels)
        emb = self._embed(bundle, self.sentences)
        if self.reference is None:
            self.reference = emb
        return mean_cosine(self.reference, emb)

    def _embed(self, bundle: ModelBundle, texts: list[str]) -> Tensor:
        model = bundle.model
        with torch.no_grad():
            if self.kind == "sentence-transformer":
                return model.encode(texts, convert_to_tensor=True, batch_size=32)  # type: ignore[operator]
            enc = bundle.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=256)
            out = model(**enc)
            if hasattr(out, "logits"):
                return out.logits
            mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            return (out.last_hidden_state * mask).sum(1) / mask.sum(1)  # mean pooling, (B, C)

    def latency(self, bundle: ModelBundle) -> dict[str, Timing]:
        """Median CPU latency per configured batch size."""
        lc = self.config.latency
        if not lc.enabled:
            return {}
        return {f"batch{b}": self._time(bundle, b) for b in lc.batch_sizes}

    def _time(self, bundle: ModelBundle, batch: int) -> Timing:
        lc, model = self.config.latency, bundle.model
        if self.kind == "causal-lm":
            ids = self.windows[:1, : lc.seq_len].expand(batch, -1).contiguous()
            return time_workload(lambda: model(input_ids=ids), batch * ids.shape[1], lc.warmup, lc.repeats)
        if self.kind == "torch":
            x = self.images[:batch]
            return time_workload(lambda: model(x), len(x), lc.warmup, lc.repeats)
        texts = (self.sentences * batch)[:batch]
        return time_workload(lambda: self._embed(bundle, texts), batch, lc.warmup, lc.repeats)

    def measure(self, bundle: ModelBundle, size_bytes: int | None = None) -> Measurement:
        """Quality, size, parameter count, sparsity and latency of ``bundle``."""
        value = self.quality(bundle)
        warning = non_finite_warning(self.metric_name, value)
        return Measurement(self.metric_name, value, self.metric_name != "perplexity",
                           count_params(bundle.model), weight_sparsity(bundle.model), size_bytes,
                           self.latency(bundle), [warning] if warning else [])
