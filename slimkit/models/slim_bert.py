"""BERT whose layers may keep different numbers of attention heads and FFN channels (``slimkit_bert``).

transformers' BERT derives the head size from ``hidden_size / num_attention_heads`` and gives every
layer the same head count and FFN width, so a ``BertConfig`` cannot describe a BERT whose heads or
FFN channels ``prune.structured`` removed. :class:`SlimBertConfig` adds the head size and optional
per-layer counts; the Slim models build transformers' BERT modules and resize each layer to them, so
the forward pass is transformers' own.

This file imports only torch and transformers on purpose: ``save_pretrained`` copies it next to the
weights and writes an ``auto_map``, so ``AutoModel.from_pretrained(dir, trust_remote_code=True)``
loads the model without slimkit. Inside slimkit the classes are registered with the Auto classes
(:func:`slimkit.models.hf.register_slim_bert`), so no remote code runs there.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel


class SlimBertConfig(BertConfig):
    """A ``BertConfig`` with a fixed head size and optional per-layer head counts and FFN widths.

    ``attention_head_size`` None means ``hidden_size // num_attention_heads`` (as in BERT);
    ``heads_per_layer`` / ``intermediate_size_per_layer`` None mean every layer has
    ``num_attention_heads`` / ``intermediate_size`` (otherwise those hold the largest layer's value).
    """

    model_type = "slimkit_bert"

    attention_head_size: int | None = None
    heads_per_layer: list[int] | None = None
    intermediate_size_per_layer: list[int] | None = None

    def head_size(self) -> int:
        """Width of one attention head (the same in every layer)."""
        return self.attention_head_size or self.hidden_size // self.num_attention_heads

    def layer_heads(self, index: int) -> int:
        """Attention heads of layer ``index``."""
        return self.heads_per_layer[index] if self.heads_per_layer is not None else self.num_attention_heads

    def layer_intermediate_size(self, index: int) -> int:
        """FFN width of layer ``index``."""
        if self.intermediate_size_per_layer is not None:
            return self.intermediate_size_per_layer[index]
        return self.intermediate_size


@contextmanager
def _head_count_of_full_width(config: SlimBertConfig) -> Iterator[None]:
    """Let BERT's constructors derive the real head size: they compute ``hidden_size / num_attention_heads``
    and refuse counts that do not divide ``hidden_size``. Unpruned modules (cross-attention) keep it."""
    size, kept = config.head_size(), config.num_attention_heads
    if config.hidden_size % size:
        raise ValueError(f"attention_head_size {size} does not divide hidden_size {config.hidden_size}")
    config.num_attention_heads = config.hidden_size // size
    try:
        yield
    finally:
        config.num_attention_heads = kept


def _check_layout(config: SlimBertConfig) -> None:
    for name in ("heads_per_layer", "intermediate_size_per_layer"):
        sizes = getattr(config, name)
        if sizes is not None and len(sizes) != config.num_hidden_layers:
            raise ValueError(f"{name} has {len(sizes)} entries for {config.num_hidden_layers} layers")


def _resized(model: Any, old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    if (old.in_features, old.out_features) == (in_features, out_features):
        return old
    new = nn.Linear(in_features, out_features, bias=old.bias is not None, device=old.weight.device,
                    dtype=old.weight.dtype)
    model._init_weights(new)  # BERT's initialisation; from_pretrained overwrites it anyway
    return new


def _resize_layers(model: Any, layers: Any, config: SlimBertConfig) -> None:
    """Give every layer its head count (query/key/value rows, attention output columns) and FFN width."""
    _check_layout(config)
    size, hidden = config.head_size(), config.hidden_size
    for i, layer in enumerate(layers):
        attn, width, ffn = layer.attention.self, config.layer_heads(i) * size, config.layer_intermediate_size(i)
        attn.query = _resized(model, attn.query, hidden, width)  # (heads · head_size, hidden)
        attn.key = _resized(model, attn.key, hidden, width)
        attn.value = _resized(model, attn.value, hidden, width)
        layer.attention.output.dense = _resized(model, layer.attention.output.dense, width, hidden)
        layer.intermediate.dense = _resized(model, layer.intermediate.dense, hidden, ffn)
        layer.output.dense = _resized(model, layer.output.dense, ffn, hidden)
        attn.num_attention_heads, attn.attention_head_size, attn.all_head_size = config.layer_heads(i), size, width
        if hasattr(attn, "scaling"):
            attn.scaling = size**-0.5


class SlimBertModel(BertModel):
    """``BertModel`` sized by a :class:`SlimBertConfig`."""

    config_class = SlimBertConfig

    def __init__(self, config: SlimBertConfig, add_pooling_layer: bool = True) -> None:
        with _head_count_of_full_width(config):
            super().__init__(config, add_pooling_layer=add_pooling_layer)
        _resize_layers(self, self.encoder.layer, config)


class SlimBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` sized by a :class:`SlimBertConfig`."""

    config_class = SlimBertConfig

    def __init__(self, config: SlimBertConfig) -> None:
        with _head_count_of_full_width(config):
            super().__init__(config)
        _resize_layers(self, self.bert.encoder.layer, config)


SlimBertConfig.register_for_auto_class()
SlimBertModel.register_for_auto_class("AutoModel")
SlimBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

_SLIM_CLASSES: dict[type, type] = {BertModel: SlimBertModel, SlimBertModel: SlimBertModel,
                                   BertForSequenceClassification: SlimBertForSequenceClassification,
                                   SlimBertForSequenceClassification: SlimBertForSequenceClassification}


def find_bert(model: nn.Module) -> nn.Module | None:
    """The ``BertModel`` / ``BertForSequenceClassification`` that is ``model`` or, for a sentence-transformers
    pipeline, its transformer module's ``auto_model``; None for anything else (other heads, RoBERTa, ...)."""
    candidates = [model] + [getattr(child, "auto_model", None) for child in model.children()]
    return next((m for m in candidates if type(m) in _SLIM_CLASSES), None)


def _encoder_layers(bert: Any) -> Any:
    return bert.bert.encoder.layer if isinstance(bert, BertForSequenceClassification) else bert.encoder.layer


def layer_sizes(bert: nn.Module) -> tuple[int, list[int], list[int]]:
    """Head size, heads per layer and FFN width per layer of ``bert``, measured from its modules."""
    layers = _encoder_layers(bert)
    size = layers[0].attention.self.attention_head_size
    heads = [layer.attention.self.query.out_features // size for layer in layers]
    return size, heads, [layer.intermediate.dense.out_features for layer in layers]


def _uniform_or_list(values: list[int]) -> tuple[int, list[int] | None]:
    return (values[0], None) if len(set(values)) == 1 else (max(values), values)


def slim_bert_config(bert: nn.Module) -> SlimBertConfig:
    """A :class:`SlimBertConfig` with ``bert``'s settings and the sizes its modules have now."""
    config: Any = bert.config
    size, heads, ffn = layer_sizes(bert)
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "transformers_version", "auto_map")}
    fields["num_attention_heads"], fields["heads_per_layer"] = _uniform_or_list(heads)
    fields["intermediate_size"], fields["intermediate_size_per_layer"] = _uniform_or_list(ffn)
    slim = SlimBertConfig(**{**fields, "attention_head_size": size})
    slim._attn_implementation = config._attn_implementation
    return slim


def to_slim_bert(model: nn.Module) -> nn.Module:
    """Make a structurally pruned BERT describe its own shapes, in place.

    The BERT (``model`` or the ``auto_model`` of a sentence-transformers pipeline) becomes the matching
    Slim class and gets a :class:`SlimBertConfig` measured from its layers, so ``save_pretrained`` writes a
    config that rebuilds these shapes. Modules and weights are untouched.

    Args:
        model: a ``BertModel``, ``BertForSequenceClassification`` (plain or already Slim) or a
            sentence-transformers model wrapping one.

    Returns:
        The converted BERT (``model`` itself, or the pipeline's inner model).

    Raises:
        TypeError: no supported BERT was found.
    """
    bert: Any = find_bert(model)
    if bert is None:
        raise TypeError(f"{type(model).__name__}: only BertModel and BertForSequenceClassification (alone or "
                        "inside a sentence-transformers model) can become slimkit_bert")
    old, new = bert.config, slim_bert_config(bert)
    for module in bert.modules():  # the self-attention modules keep a reference to read the attention kernel
        if getattr(module, "config", None) is old:
            module.config = new
    bert.__class__ = _SLIM_CLASSES[type(bert)]
    new.architectures = [type(bert).__name__]
    return bert
