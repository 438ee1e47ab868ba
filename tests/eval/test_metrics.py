"""Evaluation metrics against direct float64 computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from slimkit.eval.latency import time_workload
from slimkit.eval.metrics import accuracy, count_params, mean_cosine, perplexity, weight_sparsity
from tests._models import lenet_bundle, tiny_llama, token_batches


def test_perplexity_matches_a_direct_computation():
    model = tiny_llama()
    windows = token_batches(n=3, seq_len=16)
    with torch.no_grad():
        logits = model(input_ids=windows).logits.double()
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, 128), windows[:, 1:].reshape(-1))
    assert perplexity(model, windows, batch_size=2) == pytest.approx(math.exp(float(nll)), rel=1e-5)


def test_accuracy_and_cosine():
    model = lenet_bundle(in_features=4).model
    x = torch.randn(20, 4)
    y = model(x).argmax(-1)
    y[:5] = (y[:5] + 1) % 10
    assert accuracy(model, x, y, batch_size=7) == pytest.approx(0.75)
    a = torch.randn(8, 5)
    assert mean_cosine(a, 3 * a) == pytest.approx(1.0)
    assert mean_cosine(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        mean_cosine(a, a[:3])


def test_params_count_tied_once_and_sparsity():
    model = tiny_llama()
    assert count_params(model) == sum(p.numel() for p in set(model.parameters()))
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.zero_()
    linear = sum(p.numel() for n, p in model.named_parameters() if "proj" in n)
    assert weight_sparsity(model) == pytest.approx(96 * 64 / (linear + 128 * 64), rel=1e-6)


def test_timing_counts_runs():
    calls = []
    timing = time_workload(lambda: calls.append(1), items=10, warmup=2, repeats=3, min_seconds=0.0)
    assert len(calls) == 5 and timing.min_ms <= timing.median_ms <= timing.max_ms
    calls.clear()
    time_workload(lambda: calls.append(1), items=10, warmup=0, repeats=3, min_seconds=10.0, max_repeats=40)
    assert len(calls) == 40


class _ByteTokenizer:
    """Token ids = UTF-8 bytes mod 128: enough of a tokenizer for tiny_llama's 128-token vocabulary."""

    def __call__(self, text, return_tensors, add_special_tokens):
        return {"input_ids": torch.tensor([list(text.encode())]) % 128}


def test_perplexity_of_nan_logits_is_nan_and_of_hopeless_logits_is_inf_not_an_overflow_error():
    windows = token_batches(n=2, seq_len=16)
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.mul_(1e5)  # tied with the embedding: logits of ~1e6, mean NLL far above 709
    assert perplexity(model, windows) == math.inf
    with torch.no_grad():
        model.model.embed_tokens.weight[int(windows[0, 3])] = float("nan")
    assert math.isnan(perplexity(model, windows))


def test_a_nan_perplexity_becomes_a_warning_line_in_the_report(tmp_path):
    from slimkit.eval.evaluate import EvalConfig, Evaluation
    from slimkit.method import StepReport
    from slimkit.models.bundle import ModelBundle
    from slimkit.report.report import Report

    (tmp_path / "corpus.txt").write_text("a plain sentence of text, repeated. " * 200)
    bundle = ModelBundle(tiny_llama(), "causal-lm", "tiny", tokenizer=_ByteTokenizer())
    evaluation = Evaluation(bundle, EvalConfig(data=f"text:{tmp_path / 'corpus.txt'}", windows=2, seq_len=16,
                                               latency={"enabled": False}))
    before = evaluation.measure(bundle)
    assert before.warnings == []
    with torch.no_grad():
        bundle.model.model.layers[0].input_layernorm.weight.fill_(float("nan"))  # not a Linear: no method sees it
    after = evaluation.measure(bundle)
    assert math.isnan(after.value) and len(after.warnings) == 1
    report = Report("tiny", [StepReport("quant.rtn", {})], before, after)
    assert report.warnings() == ["compressed model: " + after.warnings[0]]
    assert "- WARNING: compressed model: perplexity is nan: the model's outputs are not finite" in report.to_markdown()
    assert "perplexity is nan" in report.to_json()
