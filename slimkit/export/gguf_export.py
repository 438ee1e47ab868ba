"""``--format gguf``: a Llama-family decoder as a GGUF file for llama.cpp, written from slimkit's own integers.

Every weight slimkit quantized onto a GGUF block grid (``gguf: q4_0`` and friends on ``quant.rtn`` /
``quant.gptq`` / ``quant.awq``; :mod:`slimkit.quantize.gguf_grid`) is written block by block from its
integers and scales (:mod:`slimkit.export.gguf_blocks`), so the file holds exactly slimkit's values. Other
weights are converted by the gguf package's own quantizer: Linear weights slimkit did not quantize at
``unquantized`` (f16 by default), the token embedding and an untied output head at ``embedding`` (q8_0, what
llama.cpp picks for SmolLM2's tied embedding), quantized weights no block type can hold (another group size,
bit width, or scales that are not fp16 numbers) at ``fallback``; norms stay f32. The result's notes name every
such tensor. Metadata and tokenizer: :mod:`slimkit.export.gguf_llama`.

Checks: the gguf package's reader reads the file back and every tensor slimkit quantized (and every f32
tensor) must equal slimkit's weight exactly; then transformers' GGUF loader loads the file and its logits
must match a copy of slimkit's model holding the file's values (max |diff| ≤ 1e-3), which checks names,
row order and metadata. Measured on SmolLM2-135M: see ``benchmarks/llm_deploy.py``.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
import torch
from torch import Tensor, nn

from slimkit.config import FrozenModel
from slimkit.export.formats import ExportFormat, ExportResult, RuntimeCheck, register_export_format
from slimkit.export.gguf_blocks import GGUF_TYPES, block_type, decode, fits_blocks, float_data, pack_blocks
from slimkit.export.gguf_llama import (
    copy_source_fields,
    gguf_name,
    llama_config,
    rope_row_order,
    source_gguf,
    write_bpe_tokenizer,
    write_hyperparameters,
)
from slimkit.export.int_weights import IntWeight, integer_weights, packed_paths
from slimkit.export.registry import codec_for_note, collect_notes
from slimkit.models.bundle import ModelBundle

TypeName = Literal["f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]
LOGITS_TOLERANCE = 1e-3
_EMBEDDING_NAMES = ("token_embd.weight", "output.weight")


class GGUFOptions(FrozenModel):
    """Types of the tensors slimkit did not quantize onto a GGUF grid (see the module docstring)."""

    unquantized: TypeName = "f16"
    embedding: TypeName = "q8_0"
    fallback: Literal["f32", "f16", "q8_0"] = "f16"
    check_logits: bool = True


@dataclass
class PlannedTensor:
    """One tensor of the file: its names, GGUF type, bytes, row order, and how it was made."""

    name: str  # transformers name
    gguf_name: str
    qtype: gguf.GGMLQuantizationType
    data: np.ndarray
    order: Tensor | None  # row permutation applied (q/k projections)
    exact: bool  # the file must hold slimkit's value exactly


def _file_type(plan: list[PlannedTensor]) -> int:
    """llama.cpp's ``general.file_type``: the type holding most of the non-embedding matrix weights."""
    counts: Counter[gguf.GGMLQuantizationType] = Counter()
    for t in plan:
        if t.data.ndim == 2 and t.gguf_name not in _EMBEDDING_NAMES:
            counts[t.qtype] += t.data.nbytes
    qtype = counts.most_common(1)[0][0] if counts else gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.F32:
        return int(gguf.LlamaFileType.ALL_F32)
    return int(gguf.LlamaFileType[f"MOSTLY_{qtype.name}"])


def _plan_tensor(name: str, weight: Tensor, integers: IntWeight | None, gguf_tensor: str, order: Tensor | None,
                 options: GGUFOptions, notes: list[str]) -> PlannedTensor:
    """Bytes of one parameter: from slimkit's integers when a block type holds them, else converted."""
    w = weight.detach()
    if w.dim() == 1:
        return PlannedTensor(name, gguf_tensor, gguf.GGMLQuantizationType.F32, w.float().numpy().copy(), None, True)
    w = w.reshape(w.shape[0], -1)
    if integers is not None:
        qtype, why = block_type(integers)
        if qtype is not None:
            return PlannedTensor(name, gguf_tensor, qtype, pack_blocks(integers, qtype, order), order, True)
        wanted = GGUF_TYPES[options.fallback]
        notes.append(f"{name}: {why}; written as {wanted.name}")
    else:
        wanted = GGUF_TYPES[options.embedding if gguf_tensor in _EMBEDDING_NAMES else options.unquantized]
    if not fits_blocks(tuple(w.shape), wanted):
        notes.append(f"{name}: {w.shape[1]} columns are not whole {wanted.name} blocks; written as F16")
        wanted = gguf.GGMLQuantizationType.F16
    values = w[order] if order is not None else w
    return PlannedTensor(name, gguf_tensor, wanted, float_data(values, wanted), order, False)


def plan_tensors(model: nn.Module, options: GGUFOptions, what: str) -> tuple[list[PlannedTensor], list[str]]:
    """Every parameter of ``model`` as a GGUF tensor, plus notes on the ones converted."""
    config = llama_config(model, what)
    if packed_paths(model):
        raise ValueError(f"{what}: has packed layers (quant.pack); export the model saved before quant.pack")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    integers = {f"{path}.weight": w for path, w in integer_weights(model).items()}
    notes = [f"{name}: stored by slimkit's {codec_for_note(note).name} codec, which no GGUF type holds; converted "
             "from its float values" for name, note in collect_notes(model).items() if name not in integers]
    plan = [_plan_tensor(name, param, integers.get(name), gguf_name(name, names, what),
                         rope_row_order(name, param.shape[0], config), options, notes)
            for name, param in model.named_parameters()]
    converted = Counter(t.qtype.name for t in plan if not t.exact)
    if converted:
        notes.append("converted from floats by the gguf package's quantizer: "
                     + ", ".join(f"{n} tensors as {k}" for k, n in sorted(converted.items())))
    return plan, notes


def write_file(bundle: ModelBundle, path: Path, plan: list[PlannedTensor], notes: list[str]) -> None:
    """Write the GGUF file: hyperparameters, copied or converted metadata and tokenizer, tensors."""
    config = llama_config(bundle.model, bundle.source)
    writer = gguf.GGUFWriter(path, "llama")
    write_hyperparameters(writer, config, _file_type(plan))
    source = source_gguf(bundle)
    if source is not None:
        notes.append(f"metadata and tokenizer: {copy_source_fields(writer, source)} fields copied from {source.name}")
    elif bundle.tokenizer is not None:
        try:
            notes.append(write_bpe_tokenizer(writer, bundle.tokenizer, config.vocab_size))
        except ValueError as err:
            notes.append(f"no tokenizer written ({err}): llama.cpp cannot tokenize text with this file")
    else:
        notes.append("no tokenizer written (the model has none): llama.cpp cannot tokenize text with this file")
    for t in plan:
        writer.add_tensor(t.gguf_name, t.data, raw_dtype=t.qtype if t.data.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_values(path: Path, plan: list[PlannedTensor]) -> dict[str, Tensor]:
    """The file's values per transformers name (float32, transformers' row order), read by the gguf reader."""
    reader = gguf.GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    values = {}
    for t in plan:
        stored = by_name.get(t.gguf_name)
        if stored is None or stored.tensor_type != t.qtype:
            raise ValueError(f"{path}: tensor {t.gguf_name} is missing or not {t.qtype.name} when read back")
        shape = tuple(int(n) for n in reversed(stored.shape))
        v = decode(stored.data, t.qtype, shape)
        values[t.name] = v[torch.argsort(t.order)] if t.order is not None else v
    return values


def gguf_file_values(path: Path, model: nn.Module) -> dict[str, Tensor]:
    """Every parameter of ``model`` as the GGUF file at ``path`` holds it (float32, transformers' row order), read
    with the gguf reader whatever its types: e.g. to measure the perplexity of a file's values in PyTorch."""
    config = llama_config(model, str(path))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    by_name = {t.name: t for t in gguf.GGUFReader(path).tensors}
    values = {}
    for name, param in model.named_parameters():
        stored = by_name[gguf_name(name, names, str(path))]
        v = decode(stored.data, stored.tensor_type, tuple(int(n) for n in reversed(stored.shape)))
        order = rope_row_order(name, v.shape[0], config)
        values[name] = (v[torch.argsort(order)] if order is not None else v).reshape(param.shape)
    return values


def value_check(model: nn.Module, plan: list[PlannedTensor], values: dict[str, Tensor]) -> RuntimeCheck:
    """Max |file - slimkit| over the tensors the file must hold exactly (tolerance 0)."""
    params = dict(model.named_parameters())
    diffs = [(values[t.name] - params[t.name].detach().float().reshape(values[t.name].shape)).abs()
             for t in plan if t.exact]
    flat = torch.cat([d.flatten() for d in diffs]) if diffs else torch.zeros(1)
    count = sum(1 for t in plan if t.exact and t.data.dtype == np.uint8)
    return RuntimeCheck("gguf reader", float(flat.max()), float(flat.mean()), tolerance=0.0,
                        detail=f"{count} tensors from slimkit's integers and the f32 tensors, value by value")


def logits_check(bundle: ModelBundle, path: Path, values: dict[str, Tensor]) -> RuntimeCheck:
    """transformers' GGUF loader vs a copy of slimkit's model holding the file's values, on fixed token ids."""
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True,
                                                  dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    reference = copy.deepcopy(bundle.model).eval()  # .float() is refused on models transformers loaded from GGUF
    with torch.no_grad():
        for name, param in reference.named_parameters():
            param.copy_(values[name].reshape(param.shape))
        config: Any = bundle.model.config
        vocab = min(loaded.config.vocab_size, config.vocab_size)
        ids = torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))
        diff = (loaded(ids).logits.float() - reference(ids).logits.float()).abs()
    return RuntimeCheck("transformers GGUF loader", float(diff.max()), float(diff.mean()), LOGITS_TOLERANCE,
                        detail=f"logits on 2 x 24 tokens vs slimkit's model holding the file's values; "
                               f"load {load_s:.1f} s")


def write_gguf(bundle: ModelBundle, path: Path, options: GGUFOptions) -> ExportResult:
    """Write and check ``bundle`` as a GGUF file at ``path`` (see the module docstring)."""
    plan, notes = plan_tensors(bundle.model, options, bundle.source)
    write_file(bundle, path, plan, notes)
    values = read_values(path, plan)
    checks = [value_check(bundle.model, plan, values)]
    if options.check_logits:
        checks.append(logits_check(bundle, path, values))
    written = Counter(t.qtype.name for t in plan if t.exact and t.data.dtype == np.uint8)
    notes.insert(0, "from slimkit's integers: " + (", ".join(f"{n} tensors as {k}" for k, n in sorted(written.items()))
                                                 or "none (no weight was quantized onto a GGUF grid)"))
    return ExportResult("gguf", path, checks=checks, notes=notes)


register_export_format(ExportFormat(
    "gguf", ".gguf", write_gguf, GGUFOptions, requires=(("gguf", "gguf>=0.10"),),
    description="llama.cpp GGUF (Llama-family decoders): Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 blocks from slimkit's integers"))
