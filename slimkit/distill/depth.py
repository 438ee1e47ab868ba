"""``distill.drop_layers``: a shallower student made from the teacher by keeping some of its layers.

DistilBERT (Sanh et al. 2019, section 3) initialises its student "from the teacher by taking one layer out
of two"; the kept layers start with the teacher's weights, which makes distillation converge far faster
than from scratch. This one-shot step does that to the model in place, for Llama-style decoders
(``model.layers``) and BERT-style encoders (``encoder.layer``, also inside a sentence-transformers
pipeline, e.g. MiniLM). Exactly one of:

* ``keep_every: k`` keeps layers 0, k, 2k, ... (DistilBERT: ``keep_every: 2``);
* ``drop_every: k`` drops layers k-1, 2k-1, ... (SmolLM2's 30 layers with ``drop_every: 3`` keep 20);
* ``keep: [i, j, ...]`` keeps exactly those layers, in order.

The model's config (``num_hidden_layers``, per-layer ``layer_types``) and each kept attention layer's
cache index are updated, so the model saves and reloads as a normal, smaller model. Follow it with a
``train.finetune`` step and a ``train.distill`` block whose teacher is the original (the default).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from torch import nn

from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.models.arch import decoder_layers


class DropLayersConfig(BaseConfig):
    """Keep every ``keep_every``-th layer, drop every ``drop_every``-th, or keep the listed layers."""

    method: Literal["distill.drop_layers"] = "distill.drop_layers"
    keep_every: int | None = Field(None, ge=2)
    drop_every: int | None = Field(None, ge=2)
    keep: tuple[int, ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> DropLayersConfig:
        given = [k for k in ("keep_every", "drop_every", "keep") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of keep_every, drop_every, keep (got {', '.join(given) or 'none'})")
        if self.keep is not None and list(self.keep) != sorted(set(self.keep)):
            raise ValueError(f"keep must list distinct layer indices in increasing order, got {list(self.keep)}")
        return self

    def kept_layers(self, n: int) -> list[int]:
        """Indices of the layers kept out of ``n``."""
        if self.keep_every is not None:
            return list(range(0, n, self.keep_every))
        if self.drop_every is not None:
            return [i for i in range(n) if i % self.drop_every != self.drop_every - 1]
        assert self.keep is not None
        if self.keep[-1] >= n:
            raise ValueError(f"distill.drop_layers: keep names layer {self.keep[-1]}, but the model has {n} layers "
                             f"(0-{n - 1})")
        return list(self.keep)


def _replace_stack(model: nn.Module, old: nn.ModuleList, new: nn.ModuleList) -> None:
    for name, module in model.named_modules():
        if module is old:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
            return
    raise ValueError("distill.drop_layers: the layer stack is not a submodule of the model")


def _update_configs(model: nn.Module, kept: list[int], n: int) -> None:
    """``num_hidden_layers`` and per-layer lists of every transformers config inside ``model``."""
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
               and getattr(c, "num_hidden_layers", None) == n}
    for config in configs.values():
        config.num_hidden_layers = len(kept)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list) and len(layer_types) == n:
            config.layer_types = [layer_types[i] for i in kept]


@register(DropLayersConfig)
class DropLayersMethod(Method[DropLayersConfig]):
    """Keeps the chosen layers (with their weights) at finalize; data-free."""

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        layers = decoder_layers(model)
        n = len(layers)
        kept = self.config.kept_layers(n)
        if len(kept) == n or not kept:
            raise ValueError(f"distill.drop_layers keeps {len(kept)} of the model's {n} layers; nothing to drop")
        params_before = sum(p.numel() for p in model.parameters())
        new = nn.ModuleList([layers[i] for i in kept])
        for index, layer in enumerate(new):
            attention = getattr(layer, "self_attn", None)
            if attention is not None and hasattr(attention, "layer_idx"):
                attention.layer_idx = index  # the KV cache is indexed by position in the new stack
            if hasattr(layer, "layer_idx"):
                layer_any: Any = layer  # nn.Module types attribute writes as Tensor | Module
                layer_any.layer_idx = index
        _replace_stack(model, layers, new)
        _update_configs(model, kept, n)
        return {"layers_before": n, "layers_after": len(kept), "kept": kept,
                "params_removed": params_before - sum(p.numel() for p in model.parameters())}
