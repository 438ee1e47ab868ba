"""The sequential block runner: block-0 capture, per-Linear statistics against float64 references,
targets restricted to the selected Linears, and clear errors for unsupported models or loops."""

import pytest
import torch
from torch import nn

from slimkit.calib.sequential import capture_block_inputs, run_sequential
from slimkit.calib.stats import InputStats
from slimkit.config import Targets
from slimkit.models.arch import decoder_layers, scale_groups
from tests._models import tiny_bert, tiny_llama, token_batches


def llama_loop(ids):
    def loop(model):
        for batch in ids.split(2):
            model(input_ids=batch)
    return loop


def test_decoder_layers_of_supported_architectures():
    llama, bert = tiny_llama(layers=3), tiny_bert(layers=2)
    assert decoder_layers(llama) is llama.model.layers and len(decoder_layers(llama)) == 3
    assert decoder_layers(bert) is bert.encoder.layer


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="no stack of transformer layers"):
        decoder_layers(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="Llama-style"):
        scale_groups(tiny_bert().encoder.layer[0])


def test_capture_records_block_zero_inputs_and_every_batch():
    model, ids = tiny_llama(), token_batches(n=6)
    captured = capture_block_inputs(model, llama_loop(ids), model.model.layers[0])
    assert len(captured) == 3  # the loop went on after each early stop
    hidden, _, kwargs = captured[1]
    torch.testing.assert_close(hidden, model.model.embed_tokens(ids[2:4]))
    assert "position_embeddings" in kwargs and "cache" not in kwargs


def test_loop_that_never_calls_the_model_is_an_error():
    with pytest.raises(RuntimeError, match="never reached the first transformer block"):
        capture_block_inputs(tiny_llama(), lambda model: None, tiny_llama().model.layers[0])


def test_input_stats_match_float64_reference():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 7, 5, generator=g) for _ in range(4)]
    stats = InputStats(5, with_hessian=True)
    for b in batches:
        stats.add(b)
    x = torch.cat([b.reshape(-1, 5) for b in batches]).double()  # (84, 5)
    torch.testing.assert_close(stats.hessian(), 2 * x.T @ x / x.shape[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats.column_norms(), x.norm(dim=0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats.mean_abs(), x.abs().mean(0), rtol=1e-6, atol=1e-6)


def test_runner_sees_true_layer_inputs_and_only_targeted_linears():
    model, ids = tiny_llama(layers=2), token_batches(n=4)
    expected: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: expected.__setitem__(n, torch.cat(
        [expected.get(n, torch.empty(0, a[0].shape[-1])), a[0].reshape(-1, a[0].shape[-1])])))
        for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        llama_loop(ids)(model)
    for h in hooks:
        h.remove()
    seen = {}

    def record(ctx):
        seen.update({name: s.hessian() for name, s in ctx.stats.items()})

    visited = run_sequential(model, llama_loop(ids), Targets(include=("*.mlp.*", "*.q_proj")), record,
                             with_hessian=True, description="test")
    assert visited == 8 and set(seen) == {n for n in expected if ".mlp." in n or n.endswith("q_proj")}
    for name, h in seen.items():
        x = expected[name].double()
        torch.testing.assert_close(h, 2 * x.T @ x / x.shape[0], rtol=1e-5, atol=1e-5)


def test_runner_works_on_bert_encoders():
    model, ids = tiny_bert(), token_batches(n=4)
    names = []
    run_sequential(model, llama_loop(ids), Targets(), lambda ctx: names.extend(ctx.targets), with_hessian=False,
                   description="bert")
    assert len(names) == 2 * 6 and all(n.startswith("encoder.layer.") for n in names)


def test_targets_outside_the_blocks_are_refused():
    with pytest.raises(ValueError, match="no nn.Linear inside the transformer blocks"):
        run_sequential(tiny_llama(), llama_loop(token_batches()), Targets(include=("lm_head",), exclude=()),
                       lambda ctx: None, with_hessian=False, description="test")
