"""Physical removal of units: slice Linear/Conv2d/BatchNorm tensors in place and fix the bookkeeping.

Modules keep their identity (hooks and references stay valid) but their parameters are replaced by
smaller ones and their size attributes updated, so the result is an ordinary, smaller dense model.
Optimizers built before the surgery hold the old tensors: build a new one afterwards. Hugging Face
configs are updated so that ``from_pretrained`` rebuilds the shapes: Llama-style ones when every block
keeps the same count, BERT always (it becomes ``slimkit_bert`` when heads or per-layer widths need it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from slimkit.prune.structured.groups import Part, UnitGroup


def unit_views(model: nn.Module, group: UnitGroup) -> list[Tensor]:
    """Each weight slice of ``group`` as a (units, k) tensor, row ``u`` = unit ``u``.

    Differentiable (group lasso backpropagates through it) but not for writing: input-column slices
    are copies.
    """
    views = []
    for part in group.parts:
        if part.kind == "norm":
            continue
        w: Tensor = model.get_submodule(part.module).weight  # type: ignore[assignment]  # (out, in, *kernel)
        if part.kind == "out":
            views.append(w.reshape(group.units, -1))
        else:
            split = w.reshape(w.shape[0], group.units, part.width, *w.shape[2:])  # (out, units, width, *kernel)
            views.append(split.movedim(1, 0).reshape(group.units, -1))
    return views


def channel_index(keep_units: Tensor, width: int) -> Tensor:
    """Channel indices of the kept units when each unit spans ``width`` consecutive channels."""
    return (keep_units[:, None] * width + torch.arange(width)[None, :]).reshape(-1)  # (kept · width,)


def _param(t: Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=like.requires_grad)


def _cut_out(module: Any, idx: Tensor) -> None:
    module.weight = _param(module.weight[idx], module.weight)
    if module.bias is not None:
        module.bias = _param(module.bias[idx], module.bias)
    if isinstance(module, nn.Linear):
        module.out_features = len(idx)
    else:
        module.out_channels = len(idx)


def _cut_in(module: Any, idx: Tensor) -> None:
    module.weight = _param(module.weight[:, idx], module.weight)
    if isinstance(module, nn.Linear):
        module.in_features = len(idx)
    else:
        module.in_channels = len(idx)


def _cut_norm(module: Any, idx: Tensor) -> None:
    if module.affine:
        module.weight = _param(module.weight[idx], module.weight)
        module.bias = _param(module.bias[idx], module.bias)
    if module.running_mean is not None:
        module.running_mean = module.running_mean[idx].clone()
        module.running_var = module.running_var[idx].clone()
    module.num_features = len(idx)


def _check_cuttable(module: nn.Module, part: Part) -> None:
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise ValueError(f"{part.module}: grouped/depthwise convolutions are not supported by channel removal")
    allowed = (nn.BatchNorm1d, nn.BatchNorm2d) if part.kind == "norm" else (nn.Linear, nn.Conv2d)
    if not isinstance(module, allowed):
        raise ValueError(f"{part.module}: cannot cut a {type(module).__name__} along its {part.kind} dimension "
                         "(remove quantization/parametrizations first)")


@torch.no_grad()
def keep_units(model: nn.Module, group: UnitGroup, keep: Tensor) -> None:
    """Keep only units ``keep`` (sorted indices) of ``group``: every part is sliced in place."""
    cut = {"out": _cut_out, "in": _cut_in, "norm": _cut_norm}
    for part in group.parts:
        module = model.get_submodule(part.module)
        _check_cuttable(module, part)
        cut[part.kind](module, channel_index(keep, part.width))
    _update_module_attributes(model, group, len(keep))


def _update_module_attributes(model: nn.Module, group: UnitGroup, kept: int) -> None:
    if not group.layer:
        return
    layer: Any = model.get_submodule(group.layer)
    if group.name.endswith(".mlp"):
        layer.mlp.intermediate_size = kept
    elif group.name.endswith(".query_heads"):
        layer.self_attn.num_key_value_groups = kept // group.blocks
    elif group.name.endswith(".attention.heads"):
        attn = layer.attention.self
        attn.num_attention_heads = kept
        attn.all_head_size = kept * attn.attention_head_size


def update_hf_config(model: nn.Module, structure: str, groups: list[UnitGroup], kept: list[int]) -> bool | None:
    """Write the new sizes into ``model.config`` so that ``save_pretrained`` + ``from_pretrained`` rebuild them.

    A BERT (``BertModel`` or ``BertForSequenceClassification``, alone or inside a sentence-transformers
    model) is measured layer by layer: while every head survives and the FFN widths are equal it stays a
    plain BERT with a new ``intermediate_size``; otherwise it becomes ``slimkit_bert``
    (:mod:`slimkit.models.slim_bert`), whose config records the head size and the per-layer counts, and
    which loads outside slimkit with ``trust_remote_code=True``. Llama-style configs are updated when every
    group keeps the same count.

    Returns:
        True if the config now describes the pruned shapes; False when it cannot (Llama-style blocks
        that differ, or BERT-style encoders other than BERT with heads removed or uneven widths), in
        which case only ``slimkit.load`` (which resizes modules to the saved shapes) rebuilds the model;
        None for models without a Hugging Face config (plain torch modules).
    """
    config: Any = getattr(model, "config", None)
    if config is None:
        return None
    from slimkit.models.slim_bert import find_bert

    bert = find_bert(model)
    if bert is not None:
        return _update_bert_config(bert)
    if len(set(kept)) != 1:
        return False
    k, llama = kept[0], hasattr(config, "num_key_value_heads")
    if structure == "ffn":
        config.intermediate_size = k
    elif structure == "heads" and llama:
        config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        config.num_attention_heads = k * (config.num_attention_heads // config.num_key_value_heads)
        config.num_key_value_heads = k
    elif structure == "query_heads":
        config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        config.num_attention_heads = k
    else:
        return False
    return True


def _update_bert_config(bert: nn.Module) -> bool:
    from slimkit.models.hf import register_slim_bert
    from slimkit.models.slim_bert import SlimBertConfig, layer_sizes, to_slim_bert

    config: Any = bert.config
    _, heads, ffn = layer_sizes(bert)
    if not isinstance(config, SlimBertConfig) and set(heads) == {config.num_attention_heads} and len(set(ffn)) == 1:
        config.intermediate_size = ffn[0]  # still a plain BERT, which loads anywhere without remote code
        return True
    to_slim_bert(bert)
    register_slim_bert()  # so that AutoModel.from_pretrained of a saved copy also works in this process
    return True
