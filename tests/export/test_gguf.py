"""GGUF export: slimkit's integers become ggml blocks bit for bit, models on a GGUF grid export with zero value
change, and transformers' GGUF loader runs the file with slimkit's logits."""

import gguf
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import slimkit
from slimkit.export import gguf_export, gguf_llama
from slimkit.export.formats import export_model
from slimkit.export.gguf_blocks import block_type, pack_blocks
from slimkit.export.int_weights import IntWeight
from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.primitives import QuantScheme, compute_qparams, dequantize, quantize
from slimkit.quantize.record import quant_records
from slimkit.quantize.rtn import RTNConfig
from tests._models import tiny_llama_bundle, token_batches

GRIDS = {"q4_0": (4, True), "q4_1": (4, False), "q5_0": (5, True), "q5_1": (5, False), "q8_0": (8, True)}


def _read_tensor(path, name):
    tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == name)
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return tensor.tensor_type, torch.from_numpy(np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type))
                                                ).reshape(shape)


@pytest.mark.parametrize("grid", list(GRIDS))
@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 40), blocks=st.integers(1, 9), seed=st.integers(0, 2**16),
       spread=st.sampled_from([1e-4, 0.05, 30.0]))
def test_blocks_round_trip_bit_exactly_through_the_gguf_reader(grid, rows, blocks, seed, spread, tmp_path_factory):
    bits, symmetric = GRIDS[grid]
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, 32 * blocks, generator=g) * spread
    w[0, :32] = 0  # an all-zero block
    scheme = QuantScheme(bits, symmetric, "group", 32, gguf=True)
    scale, zero = compute_qparams(w, scheme)
    q = quantize(w, scale, zero, scheme)
    zero_codes = zero if not symmetric else torch.full_like(scale, 2.0 ** (bits - 1))
    integers = IntWeight(scheme.codes(q).to(torch.uint8), scale, zero_codes, bits, 32)  # as the registry gives it
    qtype, why = block_type(integers)
    assert qtype == gguf.GGMLQuantizationType[grid.upper()], why
    path = tmp_path_factory.mktemp("blocks") / "t.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("w", pack_blocks(integers, qtype), raw_dtype=qtype)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    stored_type, values = _read_tensor(path, "w")
    assert stored_type == qtype and torch.equal(values, dequantize(q, scale, zero, scheme))


@pytest.mark.parametrize("grid", ["q4_0", "q5_0", "q8_0"])
def test_the_symmetric_grids_are_llama_cpps_rule(grid):
    """d = signed extreme / -2^(b-1) (Q8_0: absmax / 127) in fp16: gguf's own quantizer gives the same values,
    except where it rounded against the float32 scale before storing it as fp16."""
    w = torch.randn(96, 320, generator=torch.Generator().manual_seed(0)) * 0.05
    scheme = QuantScheme(*GRIDS[grid], "group", 32, gguf=True)
    scale, zero = compute_qparams(w, scheme)
    ours = dequantize(quantize(w, scale, zero, scheme), scale, zero, scheme)
    qtype = gguf.GGMLQuantizationType[grid.upper()]
    theirs = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), qtype), qtype))
    assert (ours != theirs).float().mean() < 0.01
    assert (ours - w).norm() <= (theirs - w).norm() * 1.001


@pytest.mark.parametrize("grid", ["q4_1", "q5_1"])
def test_the_affine_grids_hold_zero_and_stay_close_to_llama_cpps_error(grid):
    w = torch.randn(96, 320, generator=torch.Generator().manual_seed(0)) * 0.05
    scheme = QuantScheme(*GRIDS[grid], "group", 32, gguf=True)
    scale, zero = compute_qparams(w, scheme)
    ours = dequantize(quantize(w, scale, zero, scheme), scale, zero, scheme)
    qtype = gguf.GGMLQuantizationType[grid.upper()]
    theirs = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), qtype), qtype))
    assert torch.equal(zero, zero.round()) and torch.equal((-zero * scale).half().float(), -zero * scale)
    assert (ours - w).norm() <= (theirs - w).norm() * 1.03


def test_gguf_fixes_the_grid_fields_and_a_clash_is_an_error():
    assert GPTQConfig(gguf="q4_1").scheme() == QuantScheme(4, False, "group", 32, gguf=True)
    assert RTNConfig(gguf="q8_0", bits=8).quant_scheme() == QuantScheme(8, True, "group", 32, gguf=True)
    with pytest.raises(ValidationError, match="gguf: q4_0 fixes the grid.*leave out group_size=128"):
        GPTQConfig(gguf="q4_0", group_size=128)
    with pytest.raises(ValidationError, match="q4_0"):
        RTNConfig(gguf="q3_0")


def _calibrate(model):
    for batch in token_batches(vocab=model.config.vocab_size, n=4, seq_len=32):
        model(batch[None])


@pytest.mark.parametrize("config", [RTNConfig(gguf="q4_0"), GPTQConfig(gguf="q4_0"), GPTQConfig(gguf="q4_1"),
                                    AWQConfig(gguf="q4_0"), AWQConfig(gguf="q4_1"),
                                    RTNConfig(gguf="q8_0"), RTNConfig(gguf="q5_1", scale_search="mse")],
                         ids=["rtn-q4_0", "gptq-q4_0", "gptq-q4_1", "awq-q4_0", "awq-q4_1", "rtn-q8_0", "rtn-mse-q5_1"])
def test_a_model_on_a_gguf_grid_exports_with_zero_value_change(config, tmp_path):
    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, config, forward_loop=_calibrate)
    result = export_model(bundle, "gguf", tmp_path / "m.gguf", {"embedding": "f32"})
    assert [c.runtime for c in result.checks] == ["gguf reader", "transformers GGUF loader"]
    assert all(c.passed and c.max_abs_diff == 0.0 for c in result.checks), result.checks
    qtype = gguf.GGMLQuantizationType[config.gguf.upper()]
    assert result.notes[0] == f"from slimkit's integers: 14 tensors as {qtype.name}"
    for name in quant_records(bundle.model):  # read independently of the exporter: every value is slimkit's
        layer, proj = name.split(".")[2], name.split(".")[-2]
        gname = gguf_llama.gguf_name(name, gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2), "test")
        stored_type, values = _read_tensor(tmp_path / "m.gguf", gname)
        order = gguf_llama.rope_row_order(name, values.shape[0], bundle.model.config)
        values = values[torch.argsort(order)] if order is not None else values
        assert stored_type == qtype and torch.equal(values, bundle.model.get_parameter(name)), (layer, proj)


def test_transformers_loads_the_export_with_slimkits_logits_and_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, RTNConfig(gguf="q4_0"))
    export_model(bundle, "gguf", tmp_path / "m.gguf", {"embedding": "f32", "check_logits": False})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    theirs = dict(loaded.named_parameters())
    for name, param in bundle.model.named_parameters():  # dequantized by transformers: slimkit's values, exactly
        assert torch.equal(theirs[name], param), name
    ids = token_batches(vocab=bundle.model.config.vocab_size, n=2, seq_len=20)
    with torch.no_grad():
        diff = (loaded(ids).logits - bundle.model(ids).logits).abs().max()
    assert diff <= 1e-5
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    text = "def f(x): return x.items()  # the for statement"
    assert tokenizer(text)["input_ids"][-12:] == bundle.tokenizer(text)["input_ids"][-12:]


def test_the_logits_check_catches_a_wrong_row_order(tmp_path, monkeypatch):
    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, RTNConfig(gguf="q4_0"))
    monkeypatch.setattr(gguf_export, "rope_row_order", lambda name, rows, config: None)
    with pytest.raises(ValueError, match=r"transformers GGUF loader max \|diff\|"):
        export_model(bundle, "gguf", tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_weights_no_block_can_hold_are_written_wider_and_named(tmp_path):
    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, RTNConfig(bits=4, granularity="group", group_size=32,
                                          targets={"include": ["*.mlp.*"]}))  # fp32 scales: not a GGUF block
    slimkit.apply(bundle.model, RTNConfig(gguf="q4_0", targets={"include": ["*.self_attn.*"]}))
    result = export_model(bundle, "gguf", tmp_path / "m.gguf", {"fallback": "q8_0", "embedding": "q4_0"})
    assert result.notes[0] == "from slimkit's integers: 8 tensors as Q4_0"
    assert "model.layers.1.mlp.down_proj.weight: its scales are not fp16 numbers (quantize with gguf: q4_0 " \
           "to keep the block type); written as Q8_0" in result.notes, result.notes
    assert "converted from floats by the gguf package's quantizer: 1 tensors as Q4_0, 6 tensors as Q8_0" in result.notes
    assert all(c.passed for c in result.checks)
    assert _read_tensor(tmp_path / "m.gguf", "blk.0.ffn_up.weight")[0] == gguf.GGMLQuantizationType.Q8_0
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)


def test_other_architectures_are_refused_by_name(tmp_path):
    from slimkit.models.bundle import ModelBundle
    from tests._models import tiny_bert

    with pytest.raises(ValueError, match="bert-tiny: the GGUF export writes Llama-family decoders .*'bert'"):
        export_model(ModelBundle(tiny_bert(), "encoder", "bert-tiny"), "gguf", tmp_path / "m.gguf")


@pytest.mark.real_model
def test_smollm2_on_the_q4_0_grid_keeps_its_metadata_and_every_value(tmp_path):
    from slimkit.models.loading import load_model

    bundle = load_model("smollm2-135m")
    slimkit.apply(bundle.model, RTNConfig(gguf="q4_0"))
    result = export_model(bundle, "gguf", tmp_path / "m.gguf")
    assert all(c.passed for c in result.checks) and result.checks[0].max_abs_diff == 0.0
    assert result.notes[0] == "from slimkit's integers: 210 tensors as Q4_0"
    assert 88e6 < result.bytes < 94e6  # llama.cpp's own Q4_0 of SmolLM2-135M: 92 MB
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm" and len(fields["tokenizer.ggml.tokens"].data) == 49152
    assert fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q4_0)


def test_cli_exports_a_saved_slimkit_model_with_its_records(tmp_path):
    from typer.testing import CliRunner

    from slimkit.cli import app
    from slimkit.export.slimkit_format import save

    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, RTNConfig(gguf="q4_0"))
    save(bundle, tmp_path / "int4")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "int4"), "--format", "gguf", "--out",
                                      str(tmp_path / "m.gguf"), "--option", "embedding=f32"])
    assert result.exit_code == 0, result.output
    assert "checked in gguf reader: max |diff| 0," in result.output
    assert "checked in transformers GGUF loader: max |diff| 0," in result.output
    assert "note: from slimkit's integers: 14 tensors as Q4_0" in result.output
    _, values = _read_tensor(tmp_path / "m.gguf", "blk.1.ffn_down.weight")
    assert torch.equal(values, bundle.model.model.layers[1].mlp.down_proj.weight)
