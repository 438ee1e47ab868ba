"""Plain PyTorch models: wrap an in-memory module, or load a state-dict file for a registered architecture.

A spec names the architecture, optionally its arguments, and the weights file:
``lenet-300-100=weights.pt`` or ``mlp[in_features=64,hidden=[32,16],classes=3]=weights.pt`` (each value
is read as YAML: numbers, ``[lists]``, booleans, strings). Weights files are read with safetensors or
``torch.load(weights_only=True)``: a checkpoint can never run code on load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import architecture_arguments, build_architecture

_ARCH_SPEC = re.compile(r"^(?P<name>[\w.-]+)(?:\[(?P<args>.*)\])?=(?P<weights>[^=].*)$")


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


def _split_top_level(text: str) -> list[str]:
    """Split ``text`` at commas outside brackets: ``a=1,b=[2,3]`` -> ``["a=1", "b=[2,3]"]``."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _parse_arguments(spec: str, text: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for item in _split_top_level(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{spec!r}: architecture argument {item!r} is not KEY=VALUE")
        try:
            kwargs[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"{spec!r}: cannot read the value of architecture argument {key.strip()!r}: "
                             f"{value!r}") from None
    return kwargs


def parse_arch_spec(spec: str) -> tuple[str, dict[str, Any], Path]:
    """Split ``ARCH=WEIGHTS`` or ``ARCH[key=value,...]=WEIGHTS`` into name, keyword arguments and weights path."""
    match = _ARCH_SPEC.match(spec)
    if match is None:
        raise ValueError(f"{spec!r} is not ARCH=WEIGHTS or ARCH[key=value,...]=WEIGHTS, "
                         "e.g. mlp[in_features=64,hidden=[32],classes=3]=weights.pt")
    kwargs = _parse_arguments(spec, match["args"] or "")
    return match["name"], kwargs, Path(match["weights"]).expanduser()


def parse_arch_name(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``ARCH`` or ``ARCH[key=value,...]`` (no weights) into name and keyword arguments."""
    match = re.match(r"^(?P<name>[\w.-]+)(?:\[(?P<args>.*)\])?$", spec)
    if match is None:
        raise ValueError(f"{spec!r} is not ARCH or ARCH[key=value,...], e.g. mlp[in_features=64,hidden=[32]]")
    return match["name"], _parse_arguments(spec, match["args"] or "")


def _check_shapes(model: nn.Module, state: dict[str, Tensor], path: Path, arch: str,
                  kwargs: dict[str, Any] | None) -> None:
    """Name the first tensor whose shape differs between the file and the built model, with both shapes."""
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and expected[key].shape != tensor.shape:
            built = f"{arch}[{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}]" if kwargs else f"{arch} (defaults)"
            raise ValueError(
                f"{path}: tensor {key!r} has shape {tuple(tensor.shape)} in the file but {tuple(expected[key].shape)} "
                f"in {built}. Give the architecture's arguments in the spec as {arch}[key=value,...]={path}; "
                f"{arch} takes: {architecture_arguments(arch)}")


def load_torch_weights(path: Path, arch: str, kwargs: dict[str, Any] | None = None) -> ModelBundle:
    """Build registered architecture ``arch`` with ``kwargs`` and load the state dict at ``path`` into it."""
    model = build_architecture(arch, kwargs)
    state = _read_state(path)
    _check_shapes(model, state, path, arch, kwargs)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit architecture {arch!r} (missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]})")
    return torch_bundle(model.eval(), arch, kwargs, source=f"{arch}={path}")


def load_torch_spec(spec: str) -> ModelBundle:
    """Load ``ARCH=WEIGHTS`` / ``ARCH[key=value,...]=WEIGHTS`` (see module docstring)."""
    arch, kwargs, path = parse_arch_spec(spec)
    return load_torch_weights(path, arch, kwargs)
