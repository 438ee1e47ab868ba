"""Tiny models shared by the tests: random weights, real architectures, built in milliseconds."""

from __future__ import annotations

import torch
from torch import nn

from slimkit.models.bundle import ModelBundle


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 64, ffn: int = 96, heads: int = 4,
               kv_heads: int = 2, vocab: int = 128) -> nn.Module:
    """A Llama-architecture causal LM with grouped-query attention and tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
                         tie_word_embeddings=True, architectures=["LlamaForCausalLM"])
    return LlamaForCausalLM(config).eval()


def tiny_bert(seed: int = 0, layers: int = 2, hidden: int = 64, ffn: int = 96, heads: int = 4,
              vocab: int = 128) -> nn.Module:
    """A BERT-architecture encoder."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                        num_attention_heads=heads, max_position_embeddings=128, architectures=["BertModel"])
    return BertModel(config).eval()


def lenet_bundle(seed: int = 0, in_features: int = 784) -> ModelBundle:
    """An untrained LeNet-300-100 as a torch bundle (architecture registry entry).

    ``in_features=64`` fits scikit-learn's 8×8 digits.
    """
    from slimkit.models.zoo import build_architecture

    torch.manual_seed(seed)
    kwargs = {"in_features": in_features}
    return ModelBundle(build_architecture("lenet-300-100", kwargs).eval(), "torch", "lenet-300-100",
                       arch={"name": "lenet-300-100", "kwargs": kwargs})


def token_batches(vocab: int = 128, n: int = 4, seq_len: int = 32, seed: int = 0) -> torch.Tensor:
    """Random token ids (n, seq_len) for calibration of tiny LMs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seq_len), generator=g)


def pydoc_tokenizer(vocab: int = 256):
    """A small BPE tokenizer trained on Python's own documentation in about a second (no hub needed)."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["[UNK]", "[PAD]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[: vocab // 2])
    tok.train_from_iterator(list(topics.values())[:200], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def tiny_llama_bundle(seed: int = 0) -> ModelBundle:
    """A tiny Llama with a real (small) tokenizer, so the pipeline can calibrate and evaluate it on pydoc."""
    tokenizer = pydoc_tokenizer()
    return ModelBundle(tiny_llama(seed, vocab=len(tokenizer)), "causal-lm", "tiny-llama", tokenizer=tokenizer)
