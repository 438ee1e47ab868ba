"""The ``onnx`` export format round-trips through the real readers (ONNX Runtime, OpenVINO).

Tolerances: fp32 and int4 (the same weights) within 1e-4 of the largest PyTorch output, int8 within 0.25 of it
(the format's defaults, asserted here from the measured differences). The int4 file must hold slimkit's own
integers: the weights its MatMulNBits tensors stand for equal slimkit's dequantized weights bit for bit.
"""

import importlib.util

import numpy as np
import onnx
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

import slimkit
from slimkit.export.formats import export_model
from slimkit.export.onnx import nbits
from slimkit.export.onnx.graph import node_module, past_names
from slimkit.export.onnx.runtimes import onnxruntime_session, openvino_model
from slimkit.export.slimkit_format import save
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.prune.structured.method import StructuredPruneConfig
from slimkit.quantize.kernels import cpu_has_vnni
from slimkit.quantize.pack_method import PackConfig
from slimkit.quantize.rtn import RTNConfig
from tests._models import lenet_bundle, tiny_bert, tiny_llama

BOTH = {"check": ["onnxruntime", "openvino"]}
ALL = {"check": ["onnxruntime", "openvino", "tvm"]}


def _cnn_bundle(widths=(8, 16)) -> ModelBundle:
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "widths": list(widths), "image_size": 8}
    model = build_architecture("small-cnn", kwargs).eval()
    return ModelBundle(model, "torch", "small-cnn", arch={"name": "small-cnn", "kwargs": kwargs})


def _nbits_weights(path) -> dict[str, np.ndarray]:
    """The (N, K) weight of every MatMulNBits node of the file, dequantized with the op's own formula."""
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    found = {}
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            zp = inits[node.input[3]] if len(node.input) > 3 else None
            found[node.name.removesuffix(".nbits")] = nbits.dequantize_nbits(
                inits[node.input[1]], inits[node.input[2]], zp, attrs["bits"], attrs["K"])
    return found


def test_classifier_fp32_matches_in_onnxruntime_openvino_and_tvm(tmp_path):
    result = export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx", ALL)
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    assert [c.runtime for c in result.checks] == ["onnxruntime", "openvino", "tvm"]
    assert all(c.passed and c.max_abs_diff < 1e-5 and c.latency_ms > 0 for c in result.checks)
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)  # a batch size never traced
    expected = lenet_bundle(in_features=64).model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(onnxruntime_session(tmp_path / "m.onnx")({"input": x})[0], expected, atol=1e-5)


def test_a_bf16_model_exports_as_float32(tmp_path):
    bundle = lenet_bundle(in_features=64)
    bundle.model.to(torch.bfloat16)
    result = export_model(bundle, "onnx", tmp_path / "m.onnx")
    assert result.checks[0].max_abs_diff < 1e-5 and bundle.model[1].weight.dtype == torch.bfloat16  # not touched
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert {i.data_type for i in graph.initializer if len(i.dims) == 2} == {onnx.TensorProto.FLOAT}


def test_a_pruned_cnn_exports_its_smaller_shapes_and_int8_static_calibrates_on_a_data_spec(tmp_path):
    bundle = _cnn_bundle()
    slimkit.apply(bundle.model, StructuredPruneConfig(fraction=0.5))
    result = export_model(bundle, "onnx", tmp_path / "m.onnx", {"precision": "int8-static", "calib": "digits",
                                                               "calib_samples": 64, **ALL})
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    conv_weights = [numpy_helper.to_array(i).shape for i in graph.initializer if len(i.dims) == 4]
    assert sorted(s[0] for s in conv_weights) == [4, 8]  # half of 8 and 16 channels
    assert all(c.passed for c in result.checks) and result.checks[0].max_abs_diff > 0  # really quantized


def test_encoder_fp32_and_int8_dynamic(tmp_path):
    bundle = ModelBundle(tiny_bert(), "encoder", "tiny-bert")
    fp32 = export_model(bundle, "onnx", tmp_path / "f.onnx", ALL)
    assert [c.runtime for c in fp32.checks] == ["onnxruntime", "openvino", "tvm"]  # TVM reads transformers too
    assert all(c.max_abs_diff < 1e-4 * 10 and c.passed for c in fp32.checks)
    int8 = export_model(bundle, "onnx", tmp_path / "q.onnx", {"precision": "int8-dynamic",
                                                              "keep_float": ["encoder.layer.*.output.dense"]})
    nodes = onnx.load(str(tmp_path / "q.onnx")).graph.node
    float_linears = {node_module(n) for n in nodes if n.op_type == "MatMul" and node_module(n)}
    assert float_linears == {"encoder.layer.0.output.dense", "encoder.layer.0.attention.output.dense",
                             "encoder.layer.1.output.dense", "encoder.layer.1.attention.output.dense"}
    assert sum(n.op_type == "MatMulInteger" for n in nodes) == 8  # q, k, v and the FFN input of 2 layers
    assert int8.checks[0].passed and 0 < int8.checks[0].max_abs_diff
    assert "kept float" in int8.notes[0]


def _greedy_onnx(path, prompt: np.ndarray, steps: int, layers: int, kv_heads: int, head_dim: int) -> list[int]:
    run = onnxruntime_session(path)
    feed = {"input_ids": prompt} | {n: np.zeros((1, kv_heads, 0, head_dim), np.float32) for n in past_names(layers)}
    tokens = []
    for _ in range(steps):
        logits, *presents = run(feed)
        tokens.append(int(logits[0, -1].argmax()))
        past = dict(zip(past_names(layers), presents, strict=True))
        feed = {"input_ids": np.array([[tokens[-1]]], np.int64), **past}
    return tokens


def test_causal_lm_with_kv_cache_decodes_greedily_like_pytorch(tmp_path):
    model = tiny_llama()
    result = export_model(ModelBundle(model, "causal-lm", "tiny-llama"), "onnx", tmp_path / "lm.onnx", BOTH)
    assert all(c.passed and c.max_abs_diff < 1e-5 for c in result.checks)
    proto = onnx.load(str(tmp_path / "lm.onnx"))
    assert [i.name for i in proto.graph.input] == ["input_ids", *past_names(2)]
    assert proto.graph.output[1].name == "present.0.key" and proto.opset_import[0].version >= 17
    prompt = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model.generate(prompt, max_new_tokens=8, do_sample=False)[0, 6:].tolist()
    assert _greedy_onnx(tmp_path / "lm.onnx", prompt.numpy(), 8, 2, 2, 16) == expected


def test_a_head_pruned_llama_exports_its_smaller_kv_cache(tmp_path):
    model = tiny_llama()
    slimkit.apply(model, StructuredPruneConfig(structure="heads", fraction=0.5))
    result = export_model(ModelBundle(model, "causal-lm", "pruned"), "onnx", tmp_path / "lm.onnx")
    assert result.checks[0].passed and result.checks[0].max_abs_diff < 1e-5  # prefill and a decode step
    past = onnx.load(str(tmp_path / "lm.onnx")).graph.input[1].type.tensor_type.shape.dim
    assert [d.dim_value for d in past][1::2] == [1, 16]  # 1 KV head of 16 left of 2


@pytest.fixture(scope="module")
def int4_llama():
    model = tiny_llama()
    slimkit.apply(model, RTNConfig(bits=4, symmetric=False, granularity="group", group_size=48))  # ragged at 64
    return model


@pytest.mark.parametrize("packed", [False, True], ids=["fake-quantized", "packed"])
def test_int4_matmulnbits_holds_slimkits_own_integers(tmp_path, int4_llama, packed):
    import copy

    model = copy.deepcopy(int4_llama)
    expected = {name: m.weight.detach().float().numpy() for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and name != "lm_head"}
    if packed:
        slimkit.apply(model, PackConfig())
    result = export_model(ModelBundle(model, "causal-lm", "tiny"), "onnx", tmp_path / "q4.onnx",
                          {"precision": "int4", **BOTH})
    found = _nbits_weights(tmp_path / "q4.onnx")
    assert sorted(found) == sorted(expected) and len(found) == 14
    for name, w in found.items():
        np.testing.assert_array_equal(w, expected[name], err_msg=name)  # bit for bit: nothing re-quantized
    assert all(c.passed and c.max_abs_diff < 1e-5 for c in result.checks)
    linears = [n for n in onnx.load(str(tmp_path / "q4.onnx")).graph.node if nbits.node_module(n) is not None]
    assert [nbits.node_module(n) for n in linears] == ["lm_head"]  # the one float Linear left as a MatMul


def test_int4_from_a_saved_slimkit_output_through_the_cli(tmp_path, int4_llama):
    from typer.testing import CliRunner

    from slimkit.cli import app
    from tests._models import pydoc_tokenizer

    tok = pydoc_tokenizer()
    saved = save(ModelBundle(int4_llama, "causal-lm", "tiny", tokenizer=tok), tmp_path / "q")
    result = CliRunner().invoke(app, ["export", str(saved), "--format", "onnx", "--out", str(tmp_path / "q.onnx"),
                                      "--option", "precision=int4", "--option", "accuracy_level=4"])
    assert result.exit_code == 0, result.output
    assert "checked in onnxruntime" in result.output and "14 Linear layers as MatMulNBits" in result.output


def test_a_mismatching_export_is_an_error_and_nothing_is_written(tmp_path, monkeypatch):
    bundle = lenet_bundle(in_features=64)
    slimkit.apply(bundle.model, RTNConfig(bits=4, granularity="group", group_size=16))
    real = nbits.nbits_tensors

    def corrupt(weight, block):
        b, scales, zeros = real(weight, block)
        return b, scales * 1.1, zeros

    monkeypatch.setattr(nbits, "nbits_tensors", corrupt)
    with pytest.raises(ValueError, match=r"q4.onnx: the onnx export does not match the PyTorch model: onnxruntime "
                                         r"max \|diff\|"):
        export_model(bundle, "onnx", tmp_path / "q4.onnx", {"precision": "int4"})
    assert list(tmp_path.iterdir()) == []


def test_int4_needs_4_bit_weights_and_options_fit_the_precision(tmp_path):
    with pytest.raises(ValueError, match=r"precision int4 writes slimkit's own 4-bit integers.*quant.gptq"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx", {"precision": "int4"})
    with pytest.raises(ValueError, match="calib .* is required by precision int8-static and used by nothing else"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx", {"calib": "digits"})
    with pytest.raises(ValueError, match="check: .*must include onnxruntime"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx", {"check": ["openvino"]})
    with pytest.raises(ValueError, match="accuracy_level applies to precision int4"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx", {"accuracy_level": 4})
    with pytest.raises(ValueError, match="keep_float applies to the int8 precisions"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx", {"keep_float": ["1"]})
    with pytest.raises(ValueError, match=r"keep_float: 'fc\*' matches no Linear of the graph \(e.g. 1, 3, 5\)"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx",
                     {"precision": "int8-dynamic", "keep_float": ["fc*"]})
    assert list(tmp_path.iterdir()) == []


def test_compress_writes_model_onnx_beside_the_slimkit_output(tmp_path):
    import json

    from typer.testing import CliRunner

    from slimkit.cli import app

    lenet = save(lenet_bundle(in_features=64), tmp_path / "lenet")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - method: quant.rtn\n    bits: 4\n    granularity: group\n    group_size: 16\n"
                      "eval:\n  latency:\n    enabled: false\n"
                      "export:\n  format: onnx\n  options:\n    precision: int4\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compress", str(lenet), "--recipe", str(recipe), "--out", str(out),
                                      "--eval", "digits"])
    assert result.exit_code == 0, result.output
    assert "onnx checked in onnxruntime" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["export"]["path"] == "model.onnx" and report["export"]["checks"][0]["passed"]
    assert sum(n.op_type == "MatMulNBits" for n in onnx.load(str(out / "model.onnx")).graph.node) == 3


def test_missing_extras_name_their_pip_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    missing = {"onnx"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    with pytest.raises(ImportError, match=r"needs onnx: pip install 'onnx'"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx")
    missing = {"openvino"}
    with pytest.raises(ImportError, match=r"check 'openvino' needs openvino: pip install 'openvino'"):
        export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx", BOTH)


@settings(max_examples=60, deadline=None)
@example(rows=1, cols=119, width=128, bits=4, symmetric=False, seed=1)  # its one random zero point is the default 8
@given(rows=st.integers(1, 5), cols=st.integers(1, 300), width=st.sampled_from([16, 32, 48, 64, 96, 128, 0]),
       bits=st.sampled_from([4, 8]), symmetric=st.booleans(), seed=st.integers(0, 2**16))
def test_matmulnbits_tensors_stand_for_exactly_slimkits_weight(rows, cols, width, bits, symmetric, seed):
    from slimkit.export.int_weights import IntWeight

    g = torch.Generator().manual_seed(seed)
    width = width or cols  # 0: per channel
    groups = -(-cols // width)
    codes = torch.randint(0, 2**bits, (rows, cols), generator=g).to(torch.uint8)
    scale = torch.rand(rows, groups, generator=g) + 0.01
    zero = torch.full((rows, groups), 2.0 ** (bits - 1)) if symmetric else \
        torch.randint(0, 2**bits, (rows, groups), generator=g).float()
    weight = IntWeight(codes, scale, zero, bits, width)
    block = nbits.block_size(weight, cols, "w")
    assert block >= 16 and block & (block - 1) == 0
    b, s, zp = nbits.nbits_tensors(weight, block)
    default_zero = bool((zero == 2 ** (bits - 1)).all())  # MatMulNBits' default: no zero_points input needed
    assert b.shape == (rows, -(-cols // block), block * bits // 8) and (zp is None) == default_zero
    np.testing.assert_array_equal(nbits.dequantize_nbits(b, s, zp, bits, cols), weight.dequantized().numpy())


def test_group_sizes_matmulnbits_cannot_hold_are_refused():
    from slimkit.export.int_weights import IntWeight

    codes = torch.zeros(3, 100, dtype=torch.uint8)
    with pytest.raises(ValueError, match="group size 40 is not a multiple of 16"):
        nbits.block_size(IntWeight(codes, torch.ones(3, 3), torch.zeros(3, 3), 4, 40), 100, "w")


@pytest.mark.real_model
def test_minilm_int8_dynamic_keeps_the_embeddings(tmp_path):
    import torch.nn.functional as F

    from slimkit.data.spec import parse_data_spec
    from slimkit.data.text import documents, sentences
    from slimkit.models.loading import load_model

    bundle = load_model("minilm-l6")
    result = export_model(bundle, "onnx", tmp_path / "m.onnx", {"precision": "int8-dynamic"})
    assert result.checks[0].passed
    run = onnxruntime_session(tmp_path / "m.onnx")
    texts = sentences(documents(parse_data_spec("pydoc"), "eval"), 16)
    got = []
    for text in texts:
        enc = bundle.tokenizer([text], return_tensors="np")
        got.append(run({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0])
    with torch.no_grad():
        expected = bundle.model.encode(texts, convert_to_tensor=True)
    assert float(F.cosine_similarity(torch.tensor(np.concatenate(got)), expected).mean()) >= 0.99


@pytest.mark.real_model
def test_minilm_compiles_in_tvm_and_matches_fp32_and_int8_dynamic(tmp_path):
    from slimkit.models.loading import load_model

    bundle = load_model("minilm-l6")  # sentence-transformers: the whole pipeline -> sentence_embedding
    for precision, tolerance in (("fp32", 1e-5), ("int8-dynamic", 0.1)):
        result = export_model(bundle, "onnx", tmp_path / f"{precision}.onnx",
                              {"precision": precision, "check": ["onnxruntime", "tvm"]})
        ort_check, tvm_check = result.checks
        assert tvm_check.runtime == "tvm" and tvm_check.passed and tvm_check.max_abs_diff < tolerance
        # TVM computes the same int8 arithmetic as ONNX Runtime, not merely something close to PyTorch.
        # Without VNNI, ONNX Runtime's AVX2 u8s8 kernel saturates int16 pair sums on a few outputs, so
        # only the mean error is shared there; with VNNI both are exact and even the worst case agrees.
        assert abs(tvm_check.mean_abs_diff - ort_check.mean_abs_diff) < 1e-3 * max(ort_check.mean_abs_diff, 1e-3)
        if cpu_has_vnni() or precision == "fp32":
            assert abs(tvm_check.max_abs_diff - ort_check.max_abs_diff) < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_runner_reads_the_same_file(tmp_path):
    export_model(lenet_bundle(in_features=64), "onnx", tmp_path / "m.onnx")
    x = np.ones((1, 64), np.float32)
    a = onnxruntime_session(tmp_path / "m.onnx")({"input": x})[0]
    np.testing.assert_allclose(openvino_model(tmp_path / "m.onnx")({"input": x})[0], a, atol=1e-5)
