"""What a Llama-family model looks like inside a GGUF file: tensor names, the q/k row order, and metadata.

Follows llama.cpp's ``convert_hf_to_gguf.py`` for ``LlamaForCausalLM``: tensor names from the gguf package's
own name map, the rows of ``q_proj`` / ``k_proj`` permuted for llama.cpp's interleaved RoPE (transformers'
GGUF loader undoes it), hyperparameters under ``llama.*``. When the model descends from a GGUF file (the
packaged SmolLM2 is one), every ``general.*`` and ``tokenizer.*`` field of that file is copied, so llama.cpp
tokenizes and templates exactly as before; otherwise a byte-level BPE tokenizer from transformers is written
as llama.cpp's ``gpt2`` vocabulary. The hyperparameters always come from the model itself, so a model whose
shapes compression changed is described as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import torch
from torch import Tensor, nn

from slimkit.models.bundle import ModelBundle
from slimkit.models.packaged import PACKAGED_MODELS, packaged_model_path

_NOT_COPIED = ("general.architecture", "general.file_type", "general.quantization_version")
_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER_DEFINED, _TOKEN_UNUSED = 1, 3, 4, 5


def llama_config(model: nn.Module, what: str) -> Any:
    """The transformers config of a ``LlamaForCausalLM``; anything else is an error naming ``what``."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama":
        found = getattr(config, "model_type", type(model).__name__)
        raise ValueError(f"{what}: the GGUF export writes Llama-family decoders (model_type 'llama'), not {found!r}")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"{what}: RoPE type {rope.get('rope_type')!r} is not written by the GGUF export yet")
    return config


def gguf_name(name: str, names: gguf.TensorNameMap, what: str) -> str:
    """GGUF name of the transformers parameter ``name`` (``model.layers.0.self_attn.q_proj.weight`` ->
    ``blk.0.attn_q.weight``)."""
    mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ValueError(f"{what}: parameter {name!r} has no GGUF tensor name for the llama architecture")
    return mapped


def rope_row_order(name: str, rows: int, config: Any) -> Tensor | None:
    """Row permutation llama.cpp applies to ``q_proj``/``k_proj`` (``None`` for other tensors): new row i is old
    row ``order[i]``."""
    if ".self_attn.q_proj." in name:
        heads = config.num_attention_heads
    elif ".self_attn.k_proj." in name:
        heads = config.num_key_value_heads
    else:
        return None
    # convert_hf_to_gguf's permute: reshape(heads, 2, rows/heads/2).swapaxes(1, 2)
    return torch.arange(rows).reshape(heads, 2, rows // heads // 2).transpose(1, 2).reshape(rows)


def source_gguf(bundle: ModelBundle) -> Path | None:
    """The GGUF file the bundle's model was loaded from (packaged name, ``.gguf`` path or a directory with one)."""
    for source in dict.fromkeys((bundle.root_source, bundle.source)):
        entry = PACKAGED_MODELS.get(source)
        if entry is not None:
            path = packaged_model_path(source) if entry.relpath.endswith(".gguf") else None
        else:
            path = Path(source)
            if path.is_dir():
                found = sorted(path.glob("*.gguf"))
                path = found[0] if len(found) == 1 else None
        if path is not None and path.suffix == ".gguf" and path.is_file():
            return path
    return None


def write_hyperparameters(writer: gguf.GGUFWriter, config: Any, file_type: int) -> None:
    """``llama.*`` hyperparameters from the model's own config, and the file type."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def copy_source_fields(writer: gguf.GGUFWriter, source: Path) -> int:
    """Copy the ``general.*`` and ``tokenizer.*`` fields of ``source`` (as gguf's ``gguf_new_metadata`` copies
    fields); returns how many were copied."""
    reader = gguf.GGUFReader(source)
    copied = 0
    for field in reader.fields.values():
        if not field.name.startswith(("general.", "tokenizer.")) or field.name in _NOT_COPIED:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        copied += 1
    return copied


def write_bpe_tokenizer(writer: gguf.GGUFWriter, tokenizer: Any, vocab_size: int) -> str:
    """Write a transformers byte-level BPE tokenizer as llama.cpp's ``gpt2`` vocabulary; returns a note, or
    raises ``ValueError`` for other tokenizers."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(f"only byte-level BPE tokenizers are written to GGUF, not {model.get('type') or tokenizer!r}")
    by_id = {i: t for t, i in model["vocab"].items()}
    special = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in special.items()})
    tokens, types = [], []
    for i in range(vocab_size):
        if i in special:
            types.append(_TOKEN_CONTROL if special[i].get("special") else _TOKEN_USER_DEFINED)
        else:
            types.append(_TOKEN_NORMAL if i in by_id else _TOKEN_UNUSED)
        tokens.append(by_id.get(i, f"[PAD{i}]"))  # convert_hf_to_gguf pads a short vocabulary the same way
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None and token_id < vocab_size:
            getattr(writer, {"bos": "add_bos_token_id", "eos": "add_eos_token_id", "unk": "add_unk_token_id",
                             "pad": "add_pad_token_id"}[kind])(token_id)
    return f"tokenizer: {len(by_id)} BPE tokens and {len(merges)} merges from transformers (pre-tokenizer 'default')"
