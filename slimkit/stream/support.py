"""What a streamed run can compress, decided before any weight is read.

Streaming reads a Hugging Face causal LM directory with safetensors weights whose forward pass is
``embed → decoder layers → final norm → head`` with the same keyword arguments at every layer (Llama,
Mistral: the architectures whose streamed results are checked against the in-memory ones). The recipe
may use the layer-local methods (RTN, and at most one of GPTQ, AWQ, SparseGPT, Wanda: see
:mod:`slimkit.stream.layer_steps`) on weights inside the decoder layers, and write the slimkit format.
Anything else needs the whole model in memory, and is refused with the reason instead of being loaded
whole behind the user's back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.config import BaseConfig
from slimkit.models.lazy_safetensors import SafetensorsIndex
from slimkit.recipe import Recipe
from slimkit.targets import iter_targets

#: The methods a streamed run applies layer by layer.
STREAMABLE_METHODS = ("quant.rtn", "quant.gptq", "quant.awq", "prune.sparsegpt", "prune.wanda")
#: transformers ``model_type`` values whose forward pass the streamed run reproduces (see the module docstring).
STREAMABLE_MODEL_TYPES = ("llama", "mistral")
_HOW = ("streaming reads a Hugging Face causal LM directory (config.json + safetensors weights); load the model "
        "with slimkit or transformers and save it with save_pretrained(DIR) first")


@dataclass(frozen=True)
class StreamSource:
    """A model directory a streamed run can read: its transformers config and the index of its weights."""

    spec: str
    directory: Path
    config: Any
    index: SafetensorsIndex


def open_source(spec: str) -> StreamSource:
    """The streamable model ``spec`` names; only headers and ``config.json`` are read.

    Raises:
        ValueError: ``spec`` is not a streamable Hugging Face causal LM directory (the message says why).
    """
    from slimkit.models.hf import hf_kind
    from slimkit.models.packaged import PACKAGED_MODELS

    if spec in PACKAGED_MODELS:
        raise ValueError(f"{spec}: a packaged model stored as GGUF cannot be streamed; {_HOW}")
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ValueError(f"{spec}: not a model directory; {_HOW}")
    if (path / "slimkit.json").is_file() or (path / "modules.json").is_file() or not (path / "config.json").is_file():
        raise ValueError(f"{spec}: a slimkit output or a sentence-transformers or other non-Hugging Face directory "
                         f"cannot be streamed; {_HOW}")
    config = _read_config(path)
    model_type = getattr(config, "model_type", None)
    if hf_kind(config) != "causal-lm" or model_type not in STREAMABLE_MODEL_TYPES:
        archs = ", ".join(getattr(config, "architectures", None) or [])
        raise ValueError(f"{spec}: streaming compresses causal LMs of type {', '.join(STREAMABLE_MODEL_TYPES)}; "
                         f"this is a {model_type} model ({archs}). Compress it in memory (without --stream)")
    return StreamSource(spec, path, config, SafetensorsIndex.from_directory(path))


def _read_config(path: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - json, transformers and huggingface_hub raise many types
        raise ValueError(f"{path / 'config.json'}: not a usable transformers config ({type(err).__name__}: "
                         f"{err})") from None


def calibrated_steps(steps: Iterable[BaseConfig]) -> list[str]:
    return [s.method for s in steps if s.needs_calibration]


def check_recipe(recipe: Recipe, where: str) -> None:
    """Refuse a recipe a streamed run cannot apply layer by layer; ``where`` names the recipe in messages.

    Raises:
        ValueError: training, a method that needs the whole model, two calibrated steps or an export format.
    """
    if recipe.train is not None:
        raise ValueError(f"{where}: training steps ({', '.join(s.method for s in recipe.steps if s.needs_training)}) "
                         "run forward and backward passes through the whole model, which a streamed run never holds; "
                         "compress in memory, or on several processes with torchrun (docs/scaling.md)")
    others = [s.method for s in recipe.steps if s.method not in STREAMABLE_METHODS]
    if others:
        raise ValueError(f"{where}: {', '.join(others)} cannot be streamed (streaming applies "
                         f"{', '.join(STREAMABLE_METHODS)}, one decoder layer at a time); compress in memory")
    calibrated = calibrated_steps(recipe.steps)
    if len(calibrated) > 1:
        raise ValueError(f"{where}: a streamed run applies one calibrated step, this recipe has {len(calibrated)} "
                         f"({', '.join(calibrated)}): each would calibrate on inputs the other changes, which one "
                         "pass over the layers cannot reproduce. Compress in memory, or split the recipe")
    if recipe.export.format != "slimkit":
        raise ValueError(f"{where}: export format {recipe.export.format!r} is written from the whole model in memory; "
                         "a streamed run writes the slimkit format only (export it later with `slimkit export`)")


def check_targets(steps: Iterable[BaseConfig], skeleton: nn.Module, prefixes: list[str], where: str) -> None:
    """Refuse steps that target nothing (as the in-memory run does) or weights outside the decoder layers
    (embeddings, head), which stay as they are in a streamed run; ``skeleton`` may hold meta tensors (only
    names are read)."""
    inside = tuple(f"{p}." for p in prefixes)
    for step in steps:
        found = list(iter_targets(skeleton, step.targets))
        if not any(isinstance(t.module, nn.Linear) for t in found):
            raise ValueError(f"{where}: {step.method}: the targets matched no nn.Linear weight (include="
                             f"{list(step.targets.include)}, exclude={list(step.targets.exclude)}); check the globs "
                             "against model.named_parameters()")
        outside = [t.fqn for t in found if not t.fqn.startswith(inside)]
        if outside:
            raise ValueError(f"{where}: {step.method} targets {', '.join(outside[:3])} outside the decoder layers; a "
                             "streamed run compresses the decoder layers only (exclude it, or compress in memory)")
