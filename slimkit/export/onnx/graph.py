"""Trace a slimkit model to an ONNX graph: classifiers, encoders / sentence-transformers and causal LMs.

The model is first copied as float32 with every packed layer turned back into an ``nn.Linear`` holding
exactly the weight its integers stand for (:func:`float_reference`): the graph is traced from that copy, and
the same copy is the PyTorch reference every runtime check compares against, so a check measures the export,
not bf16 kernels. Pruned models simply have smaller modules and trace with their smaller shapes.

Graph inputs and outputs by kind (batch, sequence and cache lengths are dynamic):

* ``torch`` classifiers: ``input`` (B, *sample shape) -> ``logits``;
* ``encoder``: ``input_ids``, ``attention_mask`` (B, T) -> ``last_hidden_state`` (B, T, H);
* ``sentence-transformer``: ``input_ids``, ``attention_mask`` -> ``sentence_embedding`` (B, D), the whole
  pipeline (transformer, pooling, normalisation);
* ``causal-lm``: ``input_ids`` (B, T) and ``past_key_values.{i}.key|value`` (B, kv_heads, P, head_dim) ->
  ``logits`` (B, T, V) and ``present.{i}.key|value`` (B, kv_heads, P + T, head_dim). Positions continue
  from P, so a greedy loop feeds the presents back as the next step's past (no padding mask: unpadded
  batches). An empty past (P = 0) is the prefill.

Tracing uses ``torch.onnx.export(dynamo=True)`` at opset 18; the exporter records each node's module path,
which :mod:`~slimkit.export.onnx.nbits` uses to find a Linear's MatMul.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slimkit.export.int_weights import packed_paths, packed_weights
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import architecture_input_shape

OPSET = 18
WRAPPED = "model"  # attribute under which the wrappers hold the model: node paths start with "model."
_LINEAR = "torch.nn.modules.linear.Linear"


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def float_reference(model: nn.Module) -> nn.Module:
    """A float32 copy of ``model`` whose packed layers are ``nn.Linear`` with their dequantized weights."""
    weights = packed_weights(model)
    copied = copy.deepcopy(model)
    for path in packed_paths(model):
        packed: Any = model.get_submodule(path)  # a packed layer (quantize family): read by duck typing
        linear = nn.Linear(packed.in_features, packed.out_features, bias=packed.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weights[path].dequantized() if path in weights else packed.dequantized_weight())
            if packed.bias is not None:
                linear.bias.copy_(packed.bias.float())
        _replace(copied, path, linear)
    return as_float32(copied).eval()


def as_float32(model: nn.Module) -> nn.Module:
    """``model`` with every float parameter and buffer in float32, in place (transformers refuses ``.float()``
    on models it loaded from GGUF, which it marks as quantized though their weights are plain floats)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor.data = tensor.data.float()
    return model


class ClassifierGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - the graph input's name
        return self.model(input)


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module, sentence_transformer: bool) -> None:
        super().__init__()
        self.model, self.sentence_transformer = model, sentence_transformer

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        if self.sentence_transformer:
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CausalLMGraph(nn.Module):
    """One step of a causal LM with its KV cache as flat tensors (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        config: Any = model.config
        self.layers = int(config.num_hidden_layers)
        # transformers renamed past_key_values to cache (the old name warns until it is removed)
        parameters = inspect.signature(model.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"

    def forward(self, input_ids: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, use_cache=True, **{self.cache_argument: cache})
        presents: list[Tensor] = []
        for layer in (getattr(out, "cache", None) or out.past_key_values).layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


@dataclass
class GraphSpec:
    """A traceable wrapper, its input/output names and example inputs (numpy, by input name)."""

    module: nn.Module
    input_names: list[str]
    output_names: list[str]
    example: dict[str, np.ndarray]
    dynamic: dict[str, dict[int, str]]

    def torch_inputs(self, feed: dict[str, np.ndarray]) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(feed[name]) for name in self.input_names)


def kv_shape(model: nn.Module) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a transformers causal LM."""
    c: Any = model.config
    heads = int(c.num_attention_heads)
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
    return int(c.num_hidden_layers), int(getattr(c, "num_key_value_heads", None) or heads), head_dim


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def empty_past(model: nn.Module, batch: int, length: int = 0) -> dict[str, np.ndarray]:
    layers, kv_heads, head_dim = kv_shape(model)
    return {n: np.zeros((batch, kv_heads, length, head_dim), np.float32) for n in past_names(layers)}


def _vocab(bundle: ModelBundle, model: nn.Module) -> int:
    first: Any = next(iter(model.children()), None)
    config = getattr(model, "config", None) or getattr(getattr(first, "auto_model", None), "config", None)
    return int(config.vocab_size) if config is not None else len(bundle.tokenizer)


def text_feed(bundle: ModelBundle, model: nn.Module, texts: list[str] | None, batch: int, seq: int, seed: int = 0
              ) -> dict[str, np.ndarray]:
    """``input_ids`` / ``attention_mask`` for an encoder: ``texts`` tokenised, or random ids with padding."""
    if texts and bundle.tokenizer is not None:
        enc = bundle.tokenizer(texts, return_tensors="np", padding=True, truncation=True, max_length=seq)
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, _vocab(bundle, model), (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[1:, seq - seq // 4:] = 0  # later rows padded: the mask must reach the runtime
    return {"input_ids": ids, "attention_mask": mask}


def graph_spec(bundle: ModelBundle, model: nn.Module) -> GraphSpec:
    """The wrapper and example inputs for ``model`` (the float reference of ``bundle``)."""
    if bundle.kind == "torch":
        arch = bundle.arch or {}
        shape = architecture_input_shape(arch.get("name", ""), arch.get("kwargs")) if arch else None
        if shape is None:
            raise ValueError(f"{bundle.source}: ONNX export of a torch model needs a registered architecture with an "
                             "input shape (slimkit.models.register_architecture(..., input_shape=...))")
        x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
        return GraphSpec(ClassifierGraph(model), ["input"], ["logits"], {"input": x}, {"input": {0: "batch"}})
    if bundle.kind in ("encoder", "sentence-transformer"):
        st = bundle.kind == "sentence-transformer"
        out = "sentence_embedding" if st else "last_hidden_state"
        axes = {0: "batch", 1: "sequence"}
        return GraphSpec(EncoderGraph(model, st), ["input_ids", "attention_mask"], [out],
                         text_feed(bundle, model, None, 2, 16), {"input_ids": axes, "attention_mask": axes})
    if bundle.kind == "causal-lm":
        layers = kv_shape(model)[0]
        ids = np.random.default_rng(0).integers(0, _vocab(bundle, model), (2, 5), dtype=np.int64)
        past = empty_past(model, 2, 3)
        names = past_names(layers)
        dynamic = {"input_ids": {0: "batch", 1: "sequence"}} | {n: {0: "batch", 2: "past"} for n in names}
        outputs = ["logits"] + [n.replace("past_key_values", "present") for n in names]
        return GraphSpec(CausalLMGraph(model), ["input_ids", *names], outputs, {"input_ids": ids, **past}, dynamic)
    raise ValueError(f"{bundle.source}: ONNX export does not support models of kind {bundle.kind!r}")


def _dims(spec: GraphSpec) -> Any:
    """``dynamic_shapes`` for ``torch.export`` in the structure of the wrapper's arguments."""
    dims: dict[str, Any] = {}
    shapes = [{axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in spec.dynamic[name].items()}
              for name in spec.input_names]
    if isinstance(spec.module, CausalLMGraph):  # forward(input_ids, *past)
        return (shapes[0], tuple(shapes[1:]))
    return tuple(shapes)


def trace(spec: GraphSpec, path: Path) -> None:
    """Export ``spec.module`` to ``path`` (one file, weights inside) at opset :data:`OPSET`."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(spec.module, spec.torch_inputs(spec.example), dynamo=True, opset_version=OPSET,
                                    input_names=spec.input_names, output_names=spec.output_names,
                                    dynamic_shapes=_dims(spec), verbose=False,
                                    optimize=True)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def node_module(node: Any) -> str | None:
    """The path (inside the exported model) of the ``nn.Linear`` a node was traced from, from its metadata."""
    meta = {p.key: p.value for p in node.metadata_props}
    path = None
    for segment in meta.get("namespace", "").split("/"):
        name, _, cls = segment.partition(": ")
        if cls == _LINEAR:
            path = name
    if path is None or not path.startswith(f"{WRAPPED}."):
        return None
    return path[len(WRAPPED) + 1:]
