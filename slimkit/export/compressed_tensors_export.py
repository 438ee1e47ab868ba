"""``--format compressed-tensors``: a transformers checkpoint directory with the ``quantization_config`` vLLM reads.

Every Linear weight slimkit quantized on a symmetric integer grid (int4 or int8, per channel or in groups that
divide the row) becomes a ``pack-quantized`` tensor of the ``compressed-tensors`` package: slimkit's scales are
set as the layer's ``weight_scale`` and the package packs the integers (``round(w / scale)``, which gives back
slimkit's integers exactly because the weights lie on that grid) with its own compressor, so the files are
what llm-compressor writes and vLLM serves (``W4A16`` / ``W8A16``). One ``config_group`` per distinct grid,
targeting the layers by name.

Not held, and left as dense float weights with a note naming them: affine grids (transformers and
compressed-tensors cannot unpack ``pack-quantized`` zero points: llm-compressor issue #1704, reverted
upstream), ragged groups, and grids other than int4/int8. Sparse checkpoints (``sparse-bitmask``,
``sparse-24-bitmask``) are not written: compressed-tensors 0.19/0.20 keep only their configs ("legacy")
and no longer ship their compressors, so nothing here could read them back.

Check: transformers loads the directory through its compressed-tensors integration and its logits must
match slimkit's model (max |diff| ≤ 1e-3).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.config import FrozenModel
from slimkit.export.formats import ExportFormat, ExportResult, RuntimeCheck, register_export_format
from slimkit.export.int_weights import IntWeight, integer_weights, packed_paths
from slimkit.export.registry import codec_for_note, collect_notes
from slimkit.models.bundle import ModelBundle

LOGITS_TOLERANCE = 1e-3


class CompressedTensorsOptions(FrozenModel):
    """Whether to load the directory back with transformers and compare logits (on by default)."""

    check_logits: bool = True


def _held(weight: IntWeight) -> str:
    """Why ``pack-quantized`` cannot hold this weight's grid, or ``""`` when it can."""
    cols = weight.codes.shape[1]
    if weight.bits not in (4, 8):
        return f"{weight.bits}-bit has no pack-quantized form here (int4 and int8 only)"
    if not bool((weight.zero == 2 ** (weight.bits - 1)).all()):
        return "affine (zero points): transformers cannot unpack pack-quantized zero points (llm-compressor #1704)"
    if cols % weight.group_width:
        return f"group {weight.group_width} does not divide the {cols} columns (ragged last group)"
    return ""


def _quant_args(weight: IntWeight):  # -> compressed_tensors QuantizationArgs
    from compressed_tensors.quantization import QuantizationArgs

    group = weight.group_width < weight.codes.shape[1]
    return QuantizationArgs(num_bits=weight.bits, type="int", symmetric=True, strategy="group" if group else "channel",
                            group_size=weight.group_width if group else None)


def _config_groups(model: nn.Module, notes: list[str]) -> tuple[dict, dict[str, IntWeight]]:
    """compressed-tensors ``config_groups`` (one per distinct grid) and the integers of the layers they target."""
    from compressed_tensors.quantization import QuantizationScheme

    integers = integer_weights(model)
    groups: dict[str, list[str]] = {}
    args_of: dict[str, object] = {}
    held: dict[str, IntWeight] = {}
    for name, note in sorted(collect_notes(model).items()):
        module_name, _, param = name.rpartition(".")
        weight = integers.get(module_name) if param == "weight" else None
        if weight is None or not isinstance(model.get_submodule(module_name), nn.Linear):
            notes.append(f"{name}: stored by slimkit's {codec_for_note(note).name} codec; only integer Linear "
                         "weights are pack-quantized; written dense")
            continue
        why = _held(weight)
        if why:
            notes.append(f"{name}: {why}; written dense")
            continue
        args = _quant_args(weight)
        key = args.model_dump_json()
        args_of[key] = args
        groups.setdefault(key, []).append(module_name)
        held[module_name] = weight
    config_groups = {f"group_{i}": QuantizationScheme(targets=targets, weights=args_of[key])
                     for i, (key, targets) in enumerate(groups.items())}
    return config_groups, held


def _write_directory(bundle: ModelBundle, path: Path, notes: list[str]) -> int:
    """Save the checkpoint; returns how many layers were pack-quantized."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    if not hasattr(bundle.model, "save_pretrained"):
        raise ValueError(f"{bundle.source}: the compressed-tensors export writes transformers models "
                         f"(save_pretrained), not {type(bundle.model).__name__}")
    if packed_paths(bundle.model):
        raise ValueError(f"{bundle.source}: has packed layers (quant.pack); export the model saved before quant.pack")
    model: Any = copy.deepcopy(bundle.model)  # a transformers model (checked above)
    config_groups, held = _config_groups(model, notes)
    if config_groups:
        apply_quantization_config(model, QuantizationConfig(config_groups=config_groups, format="pack-quantized"))
        with torch.no_grad():
            for module_name, weight in held.items():  # the package re-derives the integers: round(w / scale)
                module = model.get_submodule(module_name)
                module.weight.copy_(weight.dequantized())
                module.weight_scale.copy_(weight.scale.reshape(module.weight_scale.shape))
        compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
        compressor.compress_model(model)
    model.save_pretrained(path)
    if config_groups:
        compressor.update_config(str(path))
    if bundle.tokenizer is not None and hasattr(bundle.tokenizer, "save_pretrained"):
        bundle.tokenizer.save_pretrained(path)
    return len(held)


def logits_check(bundle: ModelBundle, path: Path) -> RuntimeCheck:
    """transformers (compressed-tensors integration) vs slimkit's model on fixed token ids."""
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True).eval()
    load_s = time.perf_counter() - start
    config: Any = bundle.model.config
    ids = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (loaded(ids).logits.float() - bundle.model(ids).logits.float()).abs()
    return RuntimeCheck("transformers compressed-tensors", float(diff.max()), float(diff.mean()), LOGITS_TOLERANCE,
                        detail=f"logits on 2 x 24 tokens vs slimkit's model; load {load_s:.1f} s")


def write_compressed_tensors(bundle: ModelBundle, path: Path, options: CompressedTensorsOptions) -> ExportResult:
    """Write and check ``bundle`` as a compressed-tensors checkpoint directory at ``path``."""
    notes: list[str] = []
    packed = _write_directory(bundle, path, notes)
    notes.insert(0, f"pack-quantized from slimkit's integers: {packed} Linear layers"
                 + ("" if packed else " (no weight was quantized on a symmetric int4/int8 grid: a dense checkpoint)"))
    checks = [logits_check(bundle, path)] if options.check_logits and bundle.is_language_model else []
    return ExportResult("compressed-tensors", path, checks=checks, notes=notes)


register_export_format(ExportFormat(
    "compressed-tensors", "", write_compressed_tensors, CompressedTensorsOptions,
    requires=(("compressed_tensors", "compressed-tensors>=0.19"), ("transformers", "transformers")),
    description="transformers checkpoint with a compressed-tensors quantization_config (vLLM W4A16/W8A16)",
    directory=True))
