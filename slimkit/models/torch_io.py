"""Plain PyTorch models: wrap an in-memory module, or load a state-dict file for a registered architecture.

Weights files are read with safetensors or ``torch.load(weights_only=True)``: a checkpoint can never
run code on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture


def torch_bundle(model: nn.Module, arch: str | None = None, kwargs: dict[str, Any] | None = None,
                 source: str | None = None) -> ModelBundle:
    """Wrap a torch module for slimkit's pipeline and saver.

    Args:
        model: the module.
        arch: its name in the architecture registry (``register_architecture``); needed to reload it
            without passing a skeleton module.
        kwargs: the builder's keyword arguments.
        source: a name for reports (defaults to ``arch`` or the class name).
    """
    spec = {"name": arch, "kwargs": kwargs or {}} if arch else None
    return ModelBundle(model, "torch", source or arch or type(model).__name__, arch=spec)


def _read_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for bad files
        raise ValueError(f"{path}: cannot read the weights ({type(err).__name__}: {err}). Only safetensors "
                         "files and plain tensor state dicts (torch.load weights_only=True) are accepted.") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


def load_torch_weights(path: Path, arch: str, kwargs: dict[str, Any] | None = None) -> ModelBundle:
    """Build registered architecture ``arch`` and load the state dict at ``path`` into it."""
    model = build_architecture(arch, kwargs)
    state = _read_state(path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit architecture {arch!r} (missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]})")
    return torch_bundle(model.eval(), arch, kwargs, source=f"{arch}={path}")
