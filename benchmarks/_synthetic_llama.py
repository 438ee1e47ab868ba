"""A Llama-architecture checkpoint with random weights, written to disk one decoder layer at a time.

``benchmarks/memory.py`` needs a model larger than this machine's RAM in float32 (7B-shaped: hidden 4096,
FFN 11008, 32 layers, vocabulary 32000: 6.74B parameters, 27 GB in float32) to show that a streamed run
compresses it. It is stored as bfloat16 safetensors, one shard per decoder layer plus one for the
embeddings, norm and head, with the ``model.safetensors.index.json`` transformers writes for sharded
checkpoints (13.5 GB), so no more than one layer is ever in memory while writing it either. Weights are
N(0, 0.02²) like Llama's initialisation, norms are ones; every tensor has its own seeded generator, so
the same arguments write the same files. The tokenizer is a byte-level BPE trained on Python's own
documentation (pydoc topics) with at most ``vocab`` tokens, enough to calibrate and evaluate on pydoc.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from slimkit.stream.skeleton import build_skeleton, layer_prefixes

SEVEN_B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "vocab_size": 32000}


def _tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    if len(shape) == 1:  # RMSNorm weights
        return torch.ones(shape, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)


def train_tokenizer(vocab: int) -> object:
    """A byte-level BPE tokenizer of at most ``vocab`` tokens trained on pydoc topics (seconds)."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["[UNK]", "[PAD]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(topics.values()), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def write_synthetic_llama(directory: Path, seed: int = 0, **shape: int) -> int:
    """Write the checkpoint (``SEVEN_B`` unless ``shape`` overrides) into ``directory``; returns its bytes."""
    from transformers import LlamaConfig

    directory.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**{**SEVEN_B, **shape}, tie_word_embeddings=False, architectures=["LlamaForCausalLM"],
                         max_position_embeddings=4096)
    config.save_pretrained(directory)
    skeleton = build_skeleton(config)
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    prefixes = layer_prefixes(skeleton)
    groups = [[n for n in shapes if n.startswith(f"{p}.")] for p in prefixes]
    groups.append([n for n in shapes if not any(n.startswith(f"{p}.") for p in prefixes)])
    weight_map, total = {}, 0
    for k, names in enumerate(groups):
        file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {n: _tensor(n, shapes[n], seed) for n in names}
        save_file(shard, str(directory / file), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in shard.values())
        weight_map.update(dict.fromkeys(names, file))
        del shard
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    train_tokenizer(config.vocab_size).save_pretrained(directory)  # type: ignore[attr-defined]
    return total
