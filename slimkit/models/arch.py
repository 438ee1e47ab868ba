"""Per-architecture facts in one place: where a model keeps its stack of decoder/encoder layers.

Sequential calibrated methods (GPTQ, AWQ, SparseGPT, Wanda) walk a model one transformer block at a
time; this module is the only place that knows the attribute paths of each supported family.
"""

from __future__ import annotations

from torch import nn

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


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of ``model``, in execution order.

    Args:
        model: a Hugging Face Llama-style causal LM (``model.model.layers``) or BERT-style encoder
            (``encoder.layer``).

    Returns:
        The ``nn.ModuleList`` of blocks.

    Raises:
        ValueError: the architecture is not one slimkit knows how to walk layer by layer.
    """
    for path in _LAYER_PATHS:
        layers = _follow(model, path)
        if layers is not None and len(layers) > 0:
            return layers
    known = ", ".join(".".join(p) for p in _LAYER_PATHS)
    raise ValueError(f"{type(model).__name__}: no stack of transformer layers found (looked for {known}); "
                     "sequential calibrated methods support Llama-style decoders and BERT-style encoders")


def layer_prefix(model: nn.Module, layers: nn.ModuleList, index: int) -> str:
    """Full module name of block ``index`` of ``layers`` inside ``model`` (e.g. ``model.layers.3``)."""
    target = layers[index]
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError(f"block {index} is not a submodule of the model")
