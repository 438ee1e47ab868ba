"""Structured pruning of tiny Llama (GQA) and BERT: FFN channels, heads / KV groups, config and reload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit
from slimkit.eval.metrics import count_params
from slimkit.models.bundle import ModelBundle
from slimkit.prune.structured.groups import find_groups
from slimkit.prune.structured.method import StructuredPruneConfig
from slimkit.train.gradient_loops import causal_lm_loss_loop
from tests._models import tiny_bert, tiny_llama, token_batches


def _zero_units(model: nn.Module, structure: str, units: list[int]) -> None:
    """Zero every weight of the given units in every group (removal is then exact)."""
    with torch.no_grad():
        for group in find_groups(model, structure):
            for part in group.parts:
                module = model.get_submodule(part.module)
                for u in units:
                    cut = slice(u * part.width, (u + 1) * part.width)
                    if part.kind == "out":
                        module.weight[cut] = 0.0
                        if module.bias is not None:
                            module.bias[cut] = 0.0
                    else:
                        module.weight[:, cut] = 0.0


def _outputs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize(("make", "structure", "units", "kept"), [
    (tiny_llama, "ffn", list(range(0, 96, 3)), 64),
    (tiny_llama, "heads", [1], 1),
    (tiny_llama, "query_heads", [0, 3], 2),
    (tiny_bert, "ffn", list(range(48)), 48),
    (tiny_bert, "heads", [0, 2], 2),
], ids=["llama-ffn", "llama-kv-groups", "llama-query-heads", "bert-ffn", "bert-heads"])
def test_removing_zeroed_units_keeps_outputs(make, structure: str, units: list[int], kept: int) -> None:  # type: ignore[no-untyped-def]
    model = make()
    _zero_units(model, structure, units)
    ids = token_batches(n=2, seq_len=12)
    before = _outputs(model, ids)
    total = find_groups(model, structure)[0].units
    report = slimkit.apply(model, StructuredPruneConfig(structure=structure, fraction=1 - kept / total))
    assert report.stats["kept_per_group"] == [kept, kept]
    assert report.stats["params_after"] < report.stats["params_before"]
    torch.testing.assert_close(_outputs(model, ids), before, rtol=1e-4, atol=1e-5)


def test_llama_config_and_gqa_stay_consistent() -> None:
    model = tiny_llama(heads=8, kv_heads=4)
    slimkit.apply(model, StructuredPruneConfig(structure="heads", fraction=0.5))
    slimkit.apply(model, StructuredPruneConfig(structure="ffn", fraction=0.25, multiple_of=8))
    c = model.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size) == (4, 2, 8, 72)
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (32, 16, 32)
    assert attn.num_key_value_groups == 2
    model(input_ids=token_batches(n=1, seq_len=8))


def test_query_heads_keep_equal_counts_per_kv_group() -> None:
    model = tiny_llama(heads=8, kv_heads=2)
    report = slimkit.apply(model, StructuredPruneConfig(structure="query_heads", fraction=0.5))
    assert report.stats["kept_per_group"] == [4, 4]
    assert model.config.num_attention_heads == 4 and model.config.num_key_value_heads == 2
    assert model.model.layers[1].self_attn.num_key_value_groups == 2


def test_taylor_importance_with_lm_loss() -> None:
    model = tiny_llama()
    loop = causal_lm_loss_loop(token_batches(n=4, seq_len=16), batch_size=2)
    report = slimkit.apply(model, StructuredPruneConfig(structure="ffn", importance="taylor", fraction=0.5), loop)
    assert report.stats["kept_per_group"] == [48, 48]
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("structure", ["ffn", "heads"])
def test_pruned_llama_saves_and_reloads(tmp_path, structure: str) -> None:  # type: ignore[no-untyped-def]
    bundle = ModelBundle(tiny_llama(), "causal-lm", "tiny-llama")
    slimkit.apply(bundle.model, StructuredPruneConfig(structure=structure, fraction=0.5))
    ids = token_batches(n=2, seq_len=10)
    expected = _outputs(bundle.model, ids)
    out = slimkit.save(bundle, tmp_path / "out")
    loaded = slimkit.load_dir(out)
    torch.testing.assert_close(_outputs(loaded.model, ids), expected)
    assert count_params(loaded.model) == count_params(bundle.model)


def test_pruned_llama_reloads_with_from_pretrained(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import LlamaForCausalLM

    model = tiny_llama()
    slimkit.apply(model, StructuredPruneConfig(structure="ffn", fraction=0.25))
    slimkit.apply(model, StructuredPruneConfig(structure="heads", fraction=0.5))
    model.save_pretrained(tmp_path)
    again = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = token_batches(n=1, seq_len=10)
    torch.testing.assert_close(_outputs(again, ids), _outputs(model, ids))


def test_bert_with_heads_removed_reloads_through_slimkit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle = ModelBundle(tiny_bert(), "encoder", "tiny-bert")
    report = slimkit.apply(bundle.model, StructuredPruneConfig(structure="heads", fraction=0.5))
    assert report.stats["config_updated"] is True  # the model became slimkit_bert, which keeps the head size
    slimkit.apply(bundle.model, StructuredPruneConfig(structure="ffn", fraction=0.5))
    ids = token_batches(n=2, seq_len=10)
    expected = _outputs(bundle.model, ids)
    loaded = slimkit.load_dir(slimkit.save(bundle, tmp_path / "out"))
    torch.testing.assert_close(_outputs(loaded.model, ids), expected)
    assert loaded.model.config.intermediate_size == 48 and loaded.model.config.num_attention_heads == 2
    assert type(loaded.model).__name__ == "SlimBertModel"


def test_uneven_ffn_widths_reload_through_slimkit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bundle = ModelBundle(tiny_llama(), "causal-lm", "tiny-llama")
    with torch.no_grad():  # layer 0 loses 10 channels, layer 1 loses 30: no single intermediate_size
        for layer, dead in zip(bundle.model.model.layers, (10, 30), strict=True):
            layer.mlp.down_proj.weight[:, :dead] = 0.0
            layer.mlp.gate_proj.weight[:dead] = 0.0
            layer.mlp.up_proj.weight[:dead] = 0.0
    report = slimkit.apply(bundle.model, StructuredPruneConfig(structure="ffn", threshold=1e-8))
    assert report.stats["kept_per_group"] == [86, 66] and report.stats["config_updated"] is False
    ids = token_batches(n=2, seq_len=10)
    expected = _outputs(bundle.model, ids)
    loaded = slimkit.load_dir(slimkit.save(bundle, tmp_path / "out"))
    torch.testing.assert_close(_outputs(loaded.model, ids), expected)
