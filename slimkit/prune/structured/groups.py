"""Which modules share a removable unit: the coupling rules of structured pruning per architecture.

A :class:`UnitGroup` lists every tensor slice that belongs to one set of units: producers whose output
rows make the unit, norms with one entry per channel, and consumers whose input columns read it.
Removing unit ``u`` removes block ``u`` (``width`` consecutive rows/columns) from every part at once.

Known structures:
* ``sequential``: Linear/Conv2d chains inside an ``nn.Sequential`` (MLP neurons, conv channels with
  their BatchNorm entries, a Linear after ``Flatten`` losing ``H·W`` columns per channel);
* ``ffn``: transformer FFN intermediate channels (Llama gate/up → down, BERT intermediate → output);
* ``heads``: attention heads (BERT) or whole KV groups (Llama with grouped-query attention: a KV head
  and the query heads that share it, so GQA stays consistent);
* ``query_heads``: Llama query heads, the same number removed from every KV group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from slimkit.models.arch import decoder_layers, layer_prefix

Structure = Literal["sequential", "ffn", "heads", "query_heads"]
PartKind = Literal["out", "in", "norm"]


@dataclass(frozen=True)
class Part:
    """One slice of a unit group: module ``module`` cut along its outputs, inputs or norm entries."""

    module: str
    kind: PartKind
    width: int = 1  # rows / columns / entries per unit


@dataclass(frozen=True)
class UnitGroup:
    """Units removed together. ``consumer`` is the module whose input carries the units (for
    activation and Taylor scores); ``blocks`` > 1 means every block of units keeps the same count."""

    name: str
    units: int
    parts: tuple[Part, ...]
    consumer: str
    blocks: int = 1
    layer: str = ""  # block prefix of a transformer group, "" for sequential models

    def consumer_part(self) -> Part:
        return next(p for p in self.parts if p.module == self.consumer and p.kind == "in")


_PRODUCERS = (nn.Linear, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def sequential_groups(model: nn.Module) -> list[UnitGroup]:
    """Groups of a flat ``nn.Sequential`` of Linear/Conv2d layers (the last layer is never pruned)."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"{type(model).__name__}: the 'sequential' structure needs an nn.Sequential of "
                         "Linear/Conv2d layers (e.g. the zoo's mlp, lenet-300-100, small-cnn)")
    groups, producer, norm = [], None, None
    for name, child in model.named_children():
        if isinstance(child, _PRODUCERS):
            if producer is not None:
                groups.append(_sequential_group(model, producer, norm, name))
            producer, norm = name, None
        elif isinstance(child, _NORMS) and producer is not None:
            norm = name
    return groups


def _sequential_group(model: nn.Module, producer: str, norm: str | None, consumer: str) -> UnitGroup:
    prod: Any = model.get_submodule(producer)
    cons: Any = model.get_submodule(consumer)
    units = prod.out_features if isinstance(prod, nn.Linear) else prod.out_channels
    fan_in = cons.in_features if isinstance(cons, nn.Linear) else cons.in_channels
    if fan_in % units:
        raise ValueError(f"{consumer} reads {fan_in} inputs, not a multiple of {producer}'s {units} outputs")
    parts = [Part(producer, "out")] + ([Part(norm, "norm")] if norm else [])
    parts.append(Part(consumer, "in", fan_in // units))  # a Linear after Flatten reads H·W per channel
    return UnitGroup(producer, units, tuple(parts), consumer)


def _llama_ffn(prefix: str, layer: Any) -> UnitGroup:
    mlp = layer.mlp
    units = mlp.down_proj.in_features
    parts = (Part(f"{prefix}.mlp.gate_proj", "out"), Part(f"{prefix}.mlp.up_proj", "out"),
             Part(f"{prefix}.mlp.down_proj", "in"))
    return UnitGroup(f"{prefix}.mlp", units, parts, f"{prefix}.mlp.down_proj", layer=prefix)


def _bert_ffn(prefix: str, layer: Any) -> UnitGroup:
    units = layer.output.dense.in_features
    parts = (Part(f"{prefix}.intermediate.dense", "out"), Part(f"{prefix}.output.dense", "in"))
    return UnitGroup(f"{prefix}.intermediate", units, parts, f"{prefix}.output.dense", layer=prefix)


def _llama_heads(prefix: str, layer: Any, query_heads: bool) -> UnitGroup:
    attn, a = layer.self_attn, f"{prefix}.self_attn"
    hd = attn.head_dim
    kv = attn.k_proj.out_features // hd
    q = attn.q_proj.out_features // hd
    if query_heads:
        heads = (Part(f"{a}.q_proj", "out", hd), Part(f"{a}.o_proj", "in", hd))
        return UnitGroup(f"{a}.query_heads", q, heads, f"{a}.o_proj", blocks=kv, layer=prefix)
    group = hd * (q // kv)  # the query heads that share one KV head
    parts = (Part(f"{a}.q_proj", "out", group), Part(f"{a}.k_proj", "out", hd), Part(f"{a}.v_proj", "out", hd),
             Part(f"{a}.o_proj", "in", group))
    return UnitGroup(f"{a}.kv_groups", kv, parts, f"{a}.o_proj", layer=prefix)


def _bert_heads(prefix: str, layer: Any) -> UnitGroup:
    s, a = layer.attention.self, f"{prefix}.attention"
    hd = s.attention_head_size
    heads = s.query.out_features // hd
    parts = (Part(f"{a}.self.query", "out", hd), Part(f"{a}.self.key", "out", hd),
             Part(f"{a}.self.value", "out", hd), Part(f"{a}.output.dense", "in", hd))
    return UnitGroup(f"{a}.heads", heads, parts, f"{a}.output.dense", layer=prefix)


def is_llama_block(layer: nn.Module) -> bool:
    return hasattr(layer, "mlp") and hasattr(layer, "self_attn")


def transformer_groups(model: nn.Module, structure: Structure) -> list[UnitGroup]:
    """Per-block unit groups of a Llama-style decoder or BERT-style encoder."""
    layers = decoder_layers(model)
    groups = []
    for i, layer in enumerate(layers):
        prefix = layer_prefix(model, layers, i)
        llama = is_llama_block(layer)
        if structure == "ffn":
            groups.append(_llama_ffn(prefix, layer) if llama else _bert_ffn(prefix, layer))
        elif structure == "heads":
            groups.append(_llama_heads(prefix, layer, False) if llama else _bert_heads(prefix, layer))
        elif llama:
            groups.append(_llama_heads(prefix, layer, True))
        else:
            raise ValueError("'query_heads' is for grouped-query attention (Llama-style); use 'heads' for BERT")
    return groups


def find_groups(model: nn.Module, structure: Structure) -> list[UnitGroup]:
    """All unit groups of ``structure`` in ``model``."""
    if structure == "sequential":
        return sequential_groups(model)
    return transformer_groups(model, structure)
