"""quant.smoothquant: the published method folds every factor into a norm or Linear (float function kept, nothing
extra at run time); slimkit's smooth_unfoldable extension also smooths the rest at run time; both beat static
W8A8 on outlier channels."""

import pytest
import torch
from torch import nn

import slimkit
from slimkit.quantize.activation import StaticQuantLinear
from slimkit.quantize.smoothquant import SmoothQuantConfig, SmoothQuantMethod, smoothing_factors
from slimkit.quantize.static import StaticQuantConfig
from tests._models import tiny_bert, tiny_llama, token_batches
from tests.quantize._single_thread import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def _loop(ids, **kwargs):
    def loop(model):
        with torch.no_grad():
            for row in ids:
                model(input_ids=row[None], **kwargs)

    return loop


def _relative_error(out, ref):
    return float((out - ref).double().pow(2).mean() / ref.double().pow(2).mean())


def _llama_with_outlier_channels(kv_heads=2):
    model = tiny_llama(kv_heads=kv_heads)
    with torch.no_grad():  # a few input channels 30-50x larger, as in real LLM activations
        for layer in model.model.layers:
            layer.input_layernorm.weight[[3, 17]] = 40.0
            layer.post_attention_layernorm.weight[[5]] = 50.0
    return model


def test_smoothing_factors_follow_the_paper_formula():
    act = torch.tensor([8.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    w = torch.tensor([0.5, 2.0, 1.0, 0.0], dtype=torch.float64)
    s = smoothing_factors(act, w, 0.5).double()
    assert torch.allclose(s[:2], (act[:2].sqrt() / w[:2].sqrt()).double(), rtol=1e-6)
    assert s[2] == 1 and s[3] == 1  # dead channels are left alone


LAYERS = range(2)


@pytest.mark.parametrize(("kv_heads", "unfoldable", "folded", "at_run_time"), [
    (2, False, {"input_layernorm", "post_attention_layernorm", "mlp.up_proj"}, set()),
    (2, True, {"input_layernorm", "post_attention_layernorm", "mlp.up_proj"}, {"self_attn.o_proj"}),
    (4, False, {"input_layernorm", "self_attn.v_proj", "post_attention_layernorm", "mlp.up_proj"}, set()),
], ids=["gqa-published", "gqa-extension", "mha-published"])
def test_smoothing_alone_keeps_the_float_llama_function(kv_heads, unfoldable, folded, at_run_time):
    model, ids = _llama_with_outlier_channels(kv_heads), token_batches()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        down_before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    method = SmoothQuantMethod(SmoothQuantConfig(smooth_unfoldable=unfoldable))
    method.calibrate(model, _loop(ids))  # smooths the weights, norms and Linears in front; no quantization yet
    with torch.no_grad():
        smoothed_out = model(input_ids=ids).logits
        norm = model.model.layers[0].input_layernorm.weight
    assert float(norm[3].detach()) < 40.0  # the outlier moved into the q/k/v weights
    assert not torch.equal(model.model.layers[0].mlp.down_proj.weight, down_before)  # up_proj → down_proj folded
    assert torch.allclose(smoothed_out, ref, atol=1e-4, rtol=1e-4)
    assert method._stats["folded_groups"] == len(folded) * len(LAYERS)
    assert set(method._smooth) == {f"model.layers.{i}.{n}" for i in LAYERS for n in at_run_time}


def test_smoothquant_beats_static_w8a8_on_outlier_channels():
    ids = token_batches()
    errors = {}
    for name, config in [("static", StaticQuantConfig()), ("smoothquant", SmoothQuantConfig(alpha=0.5))]:
        model = _llama_with_outlier_channels()
        with torch.no_grad():
            ref = model(input_ids=ids).logits
        slimkit.apply(model, config, _loop(ids))
        with torch.no_grad():
            errors[name] = _relative_error(model(input_ids=ids).logits, ref)
    assert errors["smoothquant"] < 0.5 * errors["static"]


def test_single_layer_with_outlier_inputs_needs_the_extension():  # a lone Linear has nothing to fold into
    torch.manual_seed(0)
    x = torch.randn(256, 48)
    x[:, [2, 30]] *= 60  # outlier channels
    errors = {}
    for name, config in [("static", StaticQuantConfig(activation_symmetric=True)),
                         ("smoothquant", SmoothQuantConfig(activation_symmetric=True, smooth_unfoldable=True))]:
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(48, 32))
        ref = model(x).detach().double()
        slimkit.apply(model, config, lambda m: m(x))
        assert isinstance(model[0], StaticQuantLinear)
        errors[name] = _relative_error(model(x).detach(), ref)
    assert errors["smoothquant"] < 0.25 * errors["static"]


def test_bert_is_smoothed_through_the_quantizer_with_the_extension_and_keeps_its_function():
    model, ids = tiny_bert(), token_batches()
    with torch.no_grad():
        ref = model(input_ids=ids).last_hidden_state
    method = SmoothQuantMethod(SmoothQuantConfig(smooth_unfoldable=True))
    method.calibrate(model, _loop(ids))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).last_hidden_state, ref, atol=1e-4)
    report_stats = method.finalize(model)
    assert report_stats["folded_groups"] == 0 and report_stats["smoothed_groups"] == 13  # 2 × 6 + pooler
    with torch.no_grad():
        assert _relative_error(model(input_ids=ids).last_hidden_state, ref) < 1e-2


def test_bert_with_the_published_method_is_refused_with_a_reason():
    assert SmoothQuantConfig().smooth_unfoldable is False  # the published method is the default
    with pytest.raises(ValueError, match="smooth_unfoldable: true for slimkit's run-time smoothing"):
        slimkit.apply(tiny_bert(), SmoothQuantConfig(), _loop(token_batches()))


def _llama_with_attention_outliers():
    """GQA Llama (o_proj cannot be folded) whose attention output has loud channels: o_proj's input outliers."""
    model = tiny_llama()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.v_proj.weight[[1, 9]] *= 40.0  # value channels 1 and 9, repeated for each query head
    return model


def test_the_extension_smooths_o_proj_at_run_time_and_wins_when_its_input_has_outliers():
    ids = token_batches()
    errors, o_proj = {}, {}
    for unfoldable in (False, True):
        model = _llama_with_attention_outliers()
        with torch.no_grad():
            ref = model(input_ids=ids).logits
        slimkit.apply(model, SmoothQuantConfig(smooth_unfoldable=unfoldable), _loop(ids))
        with torch.no_grad():
            errors[unfoldable] = _relative_error(model(input_ids=ids).logits, ref)
        o_proj[unfoldable] = model.model.layers[0].self_attn.o_proj
    assert o_proj[False].input_smooth is None  # published: o_proj under GQA is not smoothed
    assert o_proj[True].input_smooth is not None and float(o_proj[True].input_smooth.max()) > 2.0
    assert errors[True] < 0.5 * errors[False]
