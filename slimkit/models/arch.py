"""Per-architecture facts in one place: where a model keeps its stack of decoder/encoder layers, and
what one input sample of a plain torch model looks like.

Sequential calibrated methods (GPTQ, AWQ, SparseGPT, Wanda) walk a model one transformer block at a
time; this module is the only place that knows the attribute paths of each supported family.
``bench`` and ``eval`` build or check torch inputs with :func:`torch_input_shape`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from slimkit.models.zoo import architecture_input_shape

# Attribute paths to the block stack, tried in order: Llama-style causal LMs (model.model.layers),
# a bare Llama-style decoder (model.layers), BERT-style encoders with or without a task head.
_LAYER_PATHS: tuple[tuple[str, ...], ...] = (
    ("model", "layers"),
    ("layers",),
    ("encoder", "layer"),
    ("bert", "encoder", "layer"),
)


def _follow(model: nn.Module, path: tuple[str, ...]) -> nn.ModuleList | None:
    node: object = model
    for name in path:
        node = getattr(node, name, None)
        if node is None:
            return None
    return node if isinstance(node, nn.ModuleList) else None


def _candidates(model: nn.Module) -> list[nn.Module]:
    """``model`` itself, then the transformers model a sentence-transformers pipeline wraps (its
    Transformer module's ``auto_model``)."""
    inner = [getattr(child, "auto_model", None) for child in model.children()]
    return [model] + [m for m in inner if isinstance(m, nn.Module)]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of ``model``, in execution order.

    Args:
        model: a Hugging Face Llama-style causal LM (``model.model.layers``), a BERT-style encoder
            (``encoder.layer``), or a sentence-transformers pipeline wrapping one.

    Returns:
        The ``nn.ModuleList`` of blocks.

    Raises:
        ValueError: the architecture is not one slimkit knows how to walk layer by layer.
    """
    for candidate in _candidates(model):
        for path in _LAYER_PATHS:
            layers = _follow(candidate, path)
            if layers is not None and len(layers) > 0:
                return layers
    known = ", ".join(".".join(p) for p in _LAYER_PATHS)
    raise ValueError(f"{type(model).__name__}: no stack of transformer layers found (looked for {known}, also "
                     "inside a sentence-transformers pipeline); sequential calibrated methods support Llama-style "
                     "decoders and BERT-style encoders")


def layer_prefix(model: nn.Module, layers: nn.ModuleList, index: int) -> str:
    """Full module name of block ``index`` of ``layers`` inside ``model`` (e.g. ``model.layers.3``)."""
    target = layers[index]
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError(f"block {index} is not a submodule of the model")


@dataclass(frozen=True)
class ScaleGroup:
    """Linears that read the output of one module, so a per-channel scale can move between them.

    Multiplying the inputs of ``linears`` by ``s`` is undone exactly by dividing the output channels of
    ``previous`` (a norm's weight and bias, or a Linear's rows) by ``s``. Names are relative to a block.
    """

    previous: str
    linears: tuple[str, ...]


def _submodule(layer: nn.Module, name: str) -> nn.Module | None:
    try:
        return layer.get_submodule(name)
    except AttributeError:
        return None


def scale_groups(layer: nn.Module) -> list[ScaleGroup]:
    """The AWQ scale groups of a Llama-style decoder block.

    ``input_layernorm → q/k/v``, ``v_proj → o_proj`` (only when their widths match, i.e. no grouped-query
    repetition), ``post_attention_layernorm → gate/up`` and ``up_proj → down_proj``.

    Raises:
        ValueError: the block is not Llama-style.
    """
    needed = ("input_layernorm", "post_attention_layernorm", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.up_proj", "mlp.down_proj")
    if any(_submodule(layer, n) is None for n in needed):
        raise ValueError(f"{type(layer).__name__}: activation-aware scaling knows Llama-style blocks only "
                         "(input_layernorm, self_attn.q/k/v/o_proj, post_attention_layernorm, mlp.gate/up/down_proj)")
    groups = [ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))]
    v, o = layer.get_submodule("self_attn.v_proj"), layer.get_submodule("self_attn.o_proj")
    if isinstance(v, nn.Linear) and isinstance(o, nn.Linear) and v.out_features == o.in_features:
        groups.append(ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",)))
    groups.append(ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))
    groups.append(ScaleGroup("mlp.up_proj", ("mlp.down_proj",)))
    return groups


#: Linears whose outputs only feed attention scores (through a softmax): AWQ leaves their range unclipped,
#: since the Linear output error understates how much a clipped query/key changes attention.
ATTENTION_SCORE_LINEARS = ("self_attn.q_proj", "self_attn.k_proj")


def torch_input_shape(model: nn.Module, arch: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """Shape of one input sample (no batch dimension) of a plain torch model, or None when it cannot be told.

    A registered architecture with an ``input_shape`` says it itself (``small-cnn`` → ``(1, 28, 28)``).
    Otherwise the first layer decides when it can: a Linear (or a packed layer with ``in_features``) reads
    ``(in_features,)``; a convolution's weights fix its channels but not the image size, so it gives None.

    Args:
        model: the module.
        arch: the bundle's ``{"name", "kwargs"}`` registry entry, if any.
    """
    if arch:
        shape = architecture_input_shape(arch["name"], arch.get("kwargs"))
        if shape is not None:
            return shape
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return None
        in_features = getattr(module, "in_features", None)
        if isinstance(in_features, int):
            return (in_features,)
    return None
