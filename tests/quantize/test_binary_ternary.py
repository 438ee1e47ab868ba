"""Binary (sign × mean|w|) and TWN ternary weights: their values, thresholds, RTN and the exporter."""

import json

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

import slimkit
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.primitives import QuantScheme, quantize_dequantize
from slimkit.quantize.record import quant_records
from tests._models import tiny_llama, token_batches
from tests.quantize._single_thread import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")

BINARY = QuantScheme(1, kind="binary")
TERNARY = QuantScheme(2, kind="ternary")
shapes = st.tuples(st.integers(1, 40), st.integers(2, 90))


@settings(max_examples=50, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_binary_takes_plus_minus_mean_magnitude_per_channel(shape, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w_hat, alpha, _ = quantize_dequantize(w, BINARY)
    expected_alpha = w.abs().mean(dim=1)  # float64 reference
    assert torch.allclose(alpha[:, 0].double(), expected_alpha, rtol=1e-5)
    for row, a, ref in zip(w_hat, alpha[:, 0], w, strict=True):
        assert set(row.tolist()) <= {float(a), -float(a)}
        assert torch.equal(row > 0, ref >= 0)


@settings(max_examples=50, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_ternary_follows_twn_threshold_and_mean(shape, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w_hat, alpha, _ = quantize_dequantize(w, TERNARY)
    delta = 0.7 * w.abs().mean(dim=1, keepdim=True)  # (rows, 1)
    above = w.abs() > delta
    ref_alpha = (w.abs() * above).sum(1) / above.sum(1).clamp_min(1)
    ref = torch.sign(w) * above * ref_alpha[:, None]
    assert torch.allclose(w_hat, ref, rtol=1e-5, atol=1e-7)  # so each row holds only -α, 0 and +α


def test_ragged_groups_ignore_padding():
    w = torch.randn(5, 45)
    scheme = QuantScheme(1, granularity="group", group_size=16, kind="binary")  # 16 + 16 + 13
    _, alpha, _ = quantize_dequantize(w, scheme)
    assert torch.allclose(alpha[:, 2], w[:, 32:].abs().mean(dim=1), rtol=1e-6)


@pytest.mark.parametrize(("scheme", "bits", "levels"), [("binary", 1, 2), ("ternary", 2, 3)])
def test_rtn_scheme_round_trips_through_the_exporter_at_its_bit_width(tmp_path, scheme, bits, levels):
    bundle = ModelBundle(tiny_llama(), "causal-lm", "tiny-llama")
    report = slimkit.apply(bundle.model, slimkit.RTNConfig(scheme=scheme))
    assert report.stats["bits"] == bits
    up = bundle.model.model.layers[0].mlp.up_proj.weight
    assert all(len(row.unique()) <= levels for row in up)
    ids = token_batches(n=2)
    with torch.no_grad():
        expected = bundle.model(input_ids=ids).logits
    save(bundle, tmp_path / "out")
    header = json.loads((tmp_path / "out" / "slimkit.json").read_text())["tensors"]
    entry = header["model.layers.0.mlp.up_proj.weight"]
    assert (entry["codec"], entry["bits"], entry["kind"]) == ("int", bits, scheme)
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "out" / "slimkit.safetensors"))["model.layers.0.mlp.up_proj.weight.qdata"]
    assert stored.numel() == (up.numel() * bits + 7) // 8
    loaded = load_slimkit_dir(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, expected)
    assert quant_records(loaded.model)["model.layers.0.mlp.up_proj.weight"].scheme.kind == scheme
