"""quant.qat: STE/LSQ fake-quant parametrizations, learnable steps seen by the optimizer, freezing, and
finalize to integers that the exporter stores."""

import pytest
import torch
import torch.nn.functional as F

import slimkit
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.quantize.activation import StaticQuantLinear
from slimkit.quantize.primitives import dequantize, quantize
from slimkit.quantize.qat import QATConfig
from slimkit.quantize.record import quant_records
from tests._models import lenet_bundle, tiny_llama, token_batches
from tests.quantize._single_thread import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 64, generator=g)
    y = x[:, :10].argmax(dim=1)  # a learnable 10-class rule
    return x, y


def _train(model, ctl, x, y, steps=80, lr=3e-3):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # created after prepare: sees LSQ steps
    model.train()
    for i in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ctl.step(i / steps)
    model.eval()


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def test_prepare_keeps_a_float_model_and_lsq_steps_are_trainable_parameters():
    bundle = lenet_bundle(in_features=64)
    before = len(list(bundle.model.parameters()))
    slimkit.prepare(bundle.model, QATConfig(bits=4, learnable_scales=True, activation_bits=8))
    names = [n for n, _ in bundle.model.named_parameters()]
    assert len(names) == before + 6  # one weight step and one input step per Linear
    assert any(n.endswith("parametrizations.weight.0.step") for n in names)
    assert any(n.endswith("input_fake_quant.step") for n in names)


@pytest.mark.parametrize("config", [
    QATConfig(bits=4),
    QATConfig(bits=4, learnable_scales=True),
    QATConfig(bits=4, activation_bits=8, freeze_at=0.5),
    QATConfig(bits=4, learnable_scales=True, activation_bits=8),
    QATConfig(scheme="ternary"),
], ids=["ste-int4", "lsq-int4", "ste-int4-a8-freeze", "lsq-int4-a8", "ternary"])
def test_qat_end_to_end_learns_and_exports_integers(tmp_path, config):
    x, y = _task()
    bundle = lenet_bundle(in_features=64)
    ctl = slimkit.prepare(bundle.model, config)
    _train(bundle.model, ctl, x, y)
    report = ctl.finalize()
    assert report.stats["layers"] == 3
    model = bundle.model
    assert _accuracy(model, x, y) > 0.8
    first = model[1]
    levels = 3 if config.scheme == "ternary" else 16
    assert all(len(row.unique()) <= levels for row in first.weight)
    assert not any(k for k in model.state_dict() if "parametrizations" in k or "input_fake_quant" in k)
    assert isinstance(first, StaticQuantLinear) == (config.activation_bits is not None)
    with torch.no_grad():
        expected = model(x)
    save(bundle, tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(loaded.model(x), expected)
    assert set(quant_records(loaded.model)) == {"1.weight", "3.weight", "5.weight"}
    assert isinstance(loaded.model[1], StaticQuantLinear) == (config.activation_bits is not None)


def test_qat_recovers_loss_that_plain_rtn_loses_at_2_bits():
    x, y = _task()
    trained = lenet_bundle(in_features=64).model
    optimizer = torch.optim.Adam(trained.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(trained(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rtn = lenet_bundle(in_features=64).model
    rtn.load_state_dict(trained.state_dict())
    slimkit.apply(rtn, slimkit.RTNConfig(bits=2))
    qat = lenet_bundle(in_features=64).model
    qat.load_state_dict(trained.state_dict())
    ctl = slimkit.prepare(qat, QATConfig(bits=2, learnable_scales=True))
    _train(qat, ctl, x, y, steps=100, lr=1e-3)
    ctl.finalize()
    with torch.no_grad():
        assert F.cross_entropy(qat(x), y) < 0.5 * F.cross_entropy(rtn(x), y)


def test_freeze_stops_ranges_and_steps():
    x, y = _task()
    bundle = lenet_bundle(in_features=64)
    ctl = slimkit.prepare(bundle.model, QATConfig(bits=4, learnable_scales=True, activation_bits=8, freeze_at=0.5))
    bundle.model(x)
    ctl.step(0.4)
    assert all(p.requires_grad for n, p in bundle.model.named_parameters() if n.endswith("step"))
    ctl.step(0.6)
    steps = [p for n, p in bundle.model.named_parameters() if n.endswith("step")]
    assert steps and all(not p.requires_grad for p in steps)
    quantizer = bundle.model[1].input_fake_quant
    seen = int(quantizer.seen)
    bundle.model.train()
    bundle.model(x)
    assert int(quantizer.seen) == seen


def test_qat_on_tiny_llama_keeps_outputs_close_at_8_bits():
    model, ids = tiny_llama(), token_batches()
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    def loop(m):
        with torch.no_grad():
            m(input_ids=ids)

    slimkit.apply(model, QATConfig(bits=8, activation_bits=8), loop)
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert float((out - ref).pow(2).mean() / ref.pow(2).mean()) < 1e-3


def test_finalize_without_any_activation_data_explains_itself():
    with pytest.raises(RuntimeError, match="saw no data"):
        slimkit.apply(lenet_bundle(in_features=64).model, QATConfig(bits=8, activation_bits=8))


def test_lsq_needs_a_symmetric_int_grid():
    with pytest.raises(ValueError, match="learnable_scales"):
        QATConfig(scheme="binary", learnable_scales=True)


def test_qat_quantizes_conv_weights_per_output_channel():
    from slimkit.models.zoo import build_architecture

    torch.manual_seed(0)
    model = build_architecture("small-cnn", {"widths": [4, 8], "image_size": 8})
    x = torch.randn(16, 1, 8, 8)
    ctl = slimkit.prepare(model, QATConfig(bits=3))
    model(x).sum().backward()
    report = ctl.finalize()
    assert report.stats["layers"] == 3  # two convs and the classifier
    conv = model[0]
    record = quant_records(model)["0.weight"]
    assert record.scale.shape == (4, 1)
    w = conv.weight.detach().reshape(4, -1)  # (out, in·k·k): every value on its channel's 3-bit grid
    q = quantize(w, record.scale, record.zero, record.scheme)
    assert torch.equal(dequantize(q, record.scale, record.zero, record.scheme), w)
