"""quant.pack: which kernel each layer gets, the model dtype policy, and exact save → load round trips."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import slimkit
from slimkit.atomic import directory_bytes
from slimkit.export.slimkit_format import WEIGHTS_FILE, load_slimkit_dir, save
from slimkit.models.bundle import ModelBundle
from slimkit.quantize.pack_method import PackConfig, choose_kernel
from slimkit.quantize.packed import PackedLinear, packed_modules
from slimkit.quantize.primitives import QuantScheme
from slimkit.quantize.record import quant_records
from slimkit.recipe import load_recipe
from tests._models import lenet_bundle, tiny_llama, token_batches

RECIPES = Path(__file__).parents[2] / "recipes"
G32 = slimkit.RTNConfig(bits=4, granularity="group", group_size=32)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize(("requested", "scheme", "shape", "dtype", "expected"), [
    ("auto", QuantScheme(4, True, "group", 64), (64, 576), "auto", "int4-weight"),
    ("auto", QuantScheme(4, True, "group", 64), (40, 576), "auto", "dequant"),
    ("auto", QuantScheme(8, True, "channel"), (64, 576), "auto", "int8-weight"),
    ("auto", QuantScheme(8, True, "channel"), (64, 576), "float32", "int8-dynamic"),
    ("auto", QuantScheme(3, True, "group", 64), (64, 576), "auto", "dequant"),
    ("int4-weight", QuantScheme(3, True, "group", 64), (64, 576), "auto", "dequant"),
    ("int8-dynamic", QuantScheme(8, True, "channel"), (64, 576), "auto", "int8-dynamic"),
    ("int8-dynamic", None, (64, 576), "auto", "int8-dynamic"),
    ("auto", None, (64, 576), "auto", None),
], ids=["int4", "int4-out40", "int8-bf16", "int8-fp32", "int3", "int4-forced-on-int3", "dyn-int8-record",
        "dyn-unrecorded", "unrecorded"])
def test_choose_kernel(requested, scheme, shape, dtype, expected):
    assert choose_kernel(requested, scheme, *shape, dtype) == expected


@pytest.mark.parametrize(("scheme", "shape", "grid", "fits"), [
    (QuantScheme(4, True, "group", 64), (64, 576), "4-bit symmetric int (group 64)", "int4-weight, dequant"),
    (QuantScheme(4, True, "group", 64), (40, 576), "4-bit symmetric int (group 64)", "fit it: dequant "),
    (QuantScheme(8, False, "channel"), (64, 576), "8-bit affine int (channel)", "fit it: dequant "),
], ids=["int4", "int4-out40", "int8-affine"])
def test_int8_dynamic_refuses_a_record_it_would_requantize(scheme, shape, grid, fits):
    with pytest.raises(ValueError, match="int8-dynamic") as caught:
        choose_kernel("int8-dynamic", scheme, *shape, "auto", "model.layers.3.mlp.up_proj")
    message = str(caught.value)
    assert "model.layers.3.mlp.up_proj is quantized " + grid in message and fits in message


def test_int8_dynamic_on_an_int4_model_names_the_first_layer():
    model = tiny_llama()
    slimkit.apply(model, G32)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_proj is quantized 4-bit .*int4-weight"):
        slimkit.apply(model, PackConfig(kernel="int8-dynamic"))
    assert not packed_modules(model)  # refused before anything was swapped


@pytest.mark.parametrize("native_bf16", [True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def test_int4_pack_runs_the_model_in_bf16_only_where_the_cpu_has_bf16(monkeypatch, native_bf16):
    monkeypatch.setattr("slimkit.quantize.pack_method.cpu_has_native_bf16", lambda: native_bf16)
    model, ids = tiny_llama(), token_batches(n=2)
    slimkit.apply(model, G32)
    simulated = logits(model, ids)
    stats = slimkit.apply(model, PackConfig()).stats
    dtype = torch.bfloat16 if native_bf16 else torch.float32  # emulated bf16 would slow everything else down
    assert stats == {"packed": {"int4-weight": 14}, "compute": {"int4 weights, bf16 compute (int4 kernel)": 14},
                     "dequant_fallback": 0, "left_float": 0, "activation_dtype": str(dtype)[6:], "probe": {}}
    assert model.model.embed_tokens.weight.dtype == dtype
    assert not quant_records(model)  # the records became packed modules
    rel = (logits(model, ids) - simulated).norm() / simulated.norm()
    assert rel < 0.02  # bf16 activations and bf16 scales


def test_float32_activations_keep_the_rest_of_the_model_float32():
    model = tiny_llama()
    slimkit.apply(model, G32)
    stats = slimkit.apply(model, PackConfig(activation_dtype="float32")).stats
    assert stats["activation_dtype"] == "float32"
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert logits(model, token_batches(n=1)).isfinite().all()


def test_explicit_kernel_falls_back_to_dequant_and_says_so():
    model, ids = tiny_llama(), token_batches(n=2)
    slimkit.apply(model, slimkit.RTNConfig(bits=3, granularity="group", group_size=32))
    simulated = logits(model, ids)
    stats = slimkit.apply(model, PackConfig(kernel="int4-weight")).stats
    assert stats["packed"] == {"dequant": 14} and stats["dequant_fallback"] == 14
    assert stats["compute"] == {"3-bit weights dequantized to float32, then matmul (no integer kernel for this grid "
                                "or shape)": 14}
    assert torch.equal(logits(model, ids), simulated)  # float32 dequant is exactly the simulated model


def test_int8_dynamic_packs_unquantized_linears_too():
    model, ids = tiny_llama(), token_batches(n=2)
    reference = logits(model, ids)
    stats = slimkit.apply(model, PackConfig(kernel="int8-dynamic")).stats
    assert stats["packed"] == {"int8-dynamic": 14} and stats["activation_dtype"] == "float32"
    rel = (logits(model, ids) - reference).norm() / reference.norm()
    assert rel < 0.03


def test_int8_dynamic_lm_head_unties_it_and_round_trips(tmp_path):
    model, ids = tiny_llama(), token_batches(n=2)
    everything = slimkit.Targets(module_types=("Linear",), exclude=())
    stats = slimkit.apply(model, PackConfig(kernel="int8-dynamic", targets=everything)).stats
    assert stats["packed"] == {"int8-dynamic": 15}
    assert isinstance(model.lm_head, PackedLinear) and isinstance(model.model.embed_tokens.weight, nn.Parameter)
    expected = logits(model, ids)
    save(ModelBundle(model, "causal-lm", "tiny-llama"), tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out").model
    assert isinstance(loaded.lm_head, PackedLinear)  # the tie in the config does not bring the float head back
    assert torch.equal(logits(loaded, ids), expected)


def test_pack_leaves_unrecorded_layers_float():
    model = tiny_llama()
    slimkit.apply(model, slimkit.RTNConfig(bits=4, granularity="group", group_size=32,
                                           targets=slimkit.Targets(include=("*.mlp.*",))))
    stats = slimkit.apply(model, PackConfig()).stats
    assert stats["packed"] == {"int4-weight": 6} and stats["left_float"] == 8
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)


@pytest.mark.parametrize("steps", [
    [G32, PackConfig()],
    [G32, PackConfig(activation_dtype="float32")],
    [slimkit.RTNConfig(bits=4, symmetric=False, granularity="group", group_size=64), PackConfig()],
    [slimkit.RTNConfig(bits=8), PackConfig(kernel="int8-weight")],
    [PackConfig(kernel="int8-dynamic")],
    [slimkit.RTNConfig(bits=3, symmetric=False, granularity="group", group_size=24), PackConfig()],
    [slimkit.RTNConfig(bits=2, granularity="tensor"), PackConfig(activation_dtype="bfloat16")],
    [slimkit.RTNConfig(scheme="binary"), PackConfig()],
], ids=["int4-g32", "int4-g32-fp32-model", "int4-affine-per-channel", "int8-weight", "int8-dynamic",
        "int3-affine-ragged-dequant", "int2-dequant-bf16", "binary-dequant"])
def test_packed_llama_round_trips_bit_exactly(tmp_path, steps):
    model, ids = tiny_llama(), token_batches(n=2)
    for step in steps:
        slimkit.apply(model, step)
    expected = logits(model, ids)
    save(ModelBundle(model, "causal-lm", "tiny-llama"), tmp_path / "out")
    header = json.loads((tmp_path / "out" / "slimkit.json").read_text())
    kernels = {spec["kernel"] for spec in header["packed"]["modules"].values()}
    loaded = load_slimkit_dir(tmp_path / "out").model
    assert {m.kernel for m in packed_modules(loaded).values()} == kernels and len(packed_modules(loaded)) == 14
    assert torch.equal(logits(loaded, ids), expected)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_odd_shape_fallback_round_trips_bit_exactly(tmp_path):
    model = nn.Sequential(nn.Linear(545, 830), nn.ReLU(), nn.Linear(830, 64)).eval()
    slimkit.apply(model, slimkit.RTNConfig(bits=4, symmetric=False, granularity="group", group_size=128,
                                           targets=slimkit.Targets(exclude=())))
    slimkit.apply(model, PackConfig(targets=slimkit.Targets(exclude=(), module_types=("Linear",))))
    assert [type(m).__name__ for m in packed_modules(model).values()] == ["DequantLinear", "DequantLinear"]
    x = torch.randn(3, 545)
    expected = model(x)
    save(ModelBundle(model, "torch", "odd"), tmp_path / "odd")
    skeleton = nn.Sequential(nn.Linear(545, 830), nn.ReLU(), nn.Linear(830, 64))
    loaded = load_slimkit_dir(tmp_path / "odd", skeleton=skeleton).model
    assert isinstance(loaded[0], PackedLinear) and torch.equal(loaded(x), expected)


def test_packed_int4_artifact_stores_integers_not_floats(tmp_path):
    dense = tiny_llama(seed=1, layers=2, hidden=128, ffn=256)
    packed = tiny_llama(seed=1, layers=2, hidden=128, ffn=256)
    slimkit.apply(packed, slimkit.RTNConfig(bits=4, granularity="group", group_size=64))
    slimkit.apply(packed, PackConfig(activation_dtype="float32"))
    save(ModelBundle(dense, "causal-lm", "d"), tmp_path / "dense")
    save(ModelBundle(packed, "causal-lm", "p"), tmp_path / "packed")
    linear = sum(m.weight.numel() for n, m in dense.named_modules() if isinstance(m, nn.Linear) and "layers" in n)
    saved = directory_bytes(tmp_path / "dense" / WEIGHTS_FILE) - directory_bytes(tmp_path / "packed" / WEIGHTS_FILE)
    assert saved > 0.95 * linear * (4 - 0.5 - 4 / 64)  # 4.5 bits per weight instead of 32


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*-packed.yaml")), ids=lambda p: p.stem)
def test_packed_recipes_pack_a_tiny_llama(path):
    model, ids = tiny_llama(), token_batches(n=2)
    reference = logits(model, ids)
    for step in load_recipe(path).steps:
        loop = (lambda m: [m(input_ids=b[None]) for b in token_batches(n=4)]) if step.needs_calibration else None
        slimkit.apply(model, step, loop)
    assert len([name for name in packed_modules(model) if name.startswith("model.layers.")]) == 14
    rel = (logits(model, ids) - reference).norm() / reference.norm()
    assert rel < 0.2


def test_compress_pipeline_reports_packed_layers(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nsteps:\n  - method: quant.pack\n    kernel: int8-dynamic\n"
                      "eval:\n  latency:\n    repeats: 2\n")
    report = slimkit.compress(lenet_bundle(in_features=64), load_recipe(recipe), tmp_path / "out", eval_data="digits")
    from slimkit.quantize.kernels import dynamic_int8_reduce_range

    activations = "7-bit activations (no VNNI)" if dynamic_int8_reduce_range() else "int8 activations"
    assert any(f"3 layers are packed: 3 × int8 dynamic: {activations} and int8 weights, fbgemm." in note
               for note in report.notes)
    loaded = load_slimkit_dir(tmp_path / "out").model
    assert len(packed_modules(loaded)) == 3


def test_mixed_int4_decoder_int8_head_recipe_packs_both_and_round_trips(tmp_path):
    model, ids = tiny_llama(), token_batches(n=2)
    recipe = load_recipe(RECIPES / "mixed-int4-g64-lm-head-int8-packed.yaml")
    stats = [slimkit.apply(model, step).stats for step in recipe.steps]
    assert stats[-1]["packed"] == {"int4-weight": 14, "int8-weight": 1}
    assert packed_modules(model)["lm_head"].kernel == "int8-weight"
    expected = logits(model, ids)
    save(ModelBundle(model, "causal-lm", "tiny-llama"), tmp_path / "out")
    loaded = load_slimkit_dir(tmp_path / "out").model
    assert packed_modules(loaded)["lm_head"].kernel == "int8-weight"
    assert torch.equal(logits(loaded, ids), expected)


def test_report_counts_what_each_packed_layer_really_runs(monkeypatch):
    from slimkit.pipeline import _notes

    monkeypatch.setattr("slimkit.quantize.pack_method.cpu_has_native_bf16", lambda: True)  # a bf16 model
    model = tiny_llama()
    slimkit.apply(model, slimkit.RTNConfig(bits=3, granularity="group", group_size=32,
                                           targets=slimkit.Targets(include=("*.mlp.*",))))
    slimkit.apply(model, G32.model_copy(update={"targets": slimkit.Targets(include=("*.self_attn.*",))}))
    stats = slimkit.apply(model, PackConfig()).stats
    assert stats["dequant_fallback"] == 6
    notes = " ".join(_notes(ModelBundle(model, "causal-lm", "tiny-llama")))
    assert ("14 layers are packed: 8 × int4 weights, bf16 compute (int4 kernel); 6 × 3-bit weights dequantized to "
            "bfloat16, then matmul (no integer kernel for this grid or shape)." in notes)
    assert "integer kernels" not in notes
