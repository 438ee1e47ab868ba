"""The streamed model: a meta-device skeleton whose layers are filled from safetensors one at a time.

:func:`build_skeleton` builds the transformers model of a directory's ``config.json`` with every
parameter on the meta device (``accelerate.init_empty_weights``, buffers such as rotary frequencies stay
real), so it costs no memory. :func:`materialize_outer` fills what lies outside the decoder layers
(embeddings, final norm, head; the tied head is tied again) in float32, as ``from_pretrained(dtype=
float32)`` would load it. :func:`load_layer` fills a private copy of one decoder layer, and
:func:`layer_view` hangs it under its full name (``model.layers.3``) in an otherwise empty module, so
targets, quantization records and state-dict keys read exactly as in the whole model. Dropping the copy
frees the layer and everything a method attached to it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimkit.models.arch import decoder_layers
from slimkit.models.lazy_safetensors import SafetensorsIndex

#: Compute dtype of streamed layers: the dtype the in-memory path loads models in.
COMPUTE_DTYPE = torch.float32


def build_skeleton(config: Any) -> nn.Module:
    """The causal LM of ``config`` with its parameters on the meta device (buffers real), in eval mode."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=COMPUTE_DTYPE)
    return model.eval()


def layer_prefixes(model: nn.Module) -> list[str]:
    """Full module names of the decoder layers, in order (``model.layers.0`` ...)."""
    layers = decoder_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(layer)] for layer in layers]


def _set_tensor(root: nn.Module, name: str, value: Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = root.get_submodule(module_name) if module_name else root
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(value, requires_grad=False)
    elif attr in module._buffers:
        module._buffers[attr] = value
    else:
        raise KeyError(f"{name}: the model has no parameter or buffer of this name")


def _expected(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """The persistent tensors of ``module`` by full name (``prefix.`` + local name)."""
    return {f"{prefix}{k}": v for k, v in module.state_dict(keep_vars=True).items()}


def materialize_outer(model: nn.Module, index: SafetensorsIndex, prefixes: list[str]) -> None:
    """Fill every tensor outside the decoder layers from ``index`` in float32, then tie the head again.

    Raises:
        ValueError: a tensor the model needs is neither stored nor tied to a stored one.
    """
    inside = tuple(f"{p}." for p in prefixes)
    wanted = [n for n in _expected(model, "") if not n.startswith(inside) and n in index.tensors]
    for name, value in index.read(wanted, COMPUTE_DTYPE).items():
        _set_tensor(model, name, value)
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()  # a tied head is not stored: it becomes the embedding again
    missing = [n for n, t in _expected(model, "").items() if not n.startswith(inside) and t.is_meta]
    if missing:
        raise ValueError(f"{index.directory}: the weights lack {', '.join(missing[:5])} (outside the decoder layers)")


def load_layer(model: nn.Module, index: SafetensorsIndex, prefix: str, position: int) -> nn.Module:
    """A float32 copy of decoder layer ``position`` (module name ``prefix``) filled from ``index``.

    Raises:
        ValueError: a tensor of the layer is missing from the checkpoint.
    """
    layer = copy.deepcopy(decoder_layers(model)[position])  # meta: copying costs nothing
    names = _expected(layer, f"{prefix}.")
    missing = [n for n in names if n not in index.tensors]
    if missing:
        raise ValueError(f"{index.directory}: the weights lack {', '.join(missing[:5])} (decoder layer {prefix})")
    for name, value in index.read(names, COMPUTE_DTYPE).items():
        _set_tensor(layer, name[len(prefix) + 1:], value)
    return layer


def layer_view(prefix: str, layer: nn.Module) -> nn.Module:
    """An empty module holding ``layer`` at ``prefix``, so its names are the whole model's (``model.layers.3.mlp``)."""
    root = node = nn.Module()
    parts = prefix.split(".")
    for part in parts[:-1]:
        child = nn.Module()
        node.add_module(part, child)
        node = child
    node.add_module(parts[-1], layer)
    return root


def read_config(directory: Path) -> Any:
    """The transformers config of ``directory`` (offline)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(directory, local_files_only=True)
