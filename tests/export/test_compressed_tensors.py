"""compressed-tensors export: slimkit's int4/int8 grids become pack-quantized checkpoints that transformers'
compressed-tensors integration loads with slimkit's logits; grids it cannot hold stay dense and are named."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

import slimkit
from slimkit.export import compressed_tensors_export
from slimkit.export.formats import export_model
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig
from tests._models import tiny_llama_bundle, token_batches

pytest.importorskip("compressed_tensors")


def _calibrate(model):
    for batch in token_batches(vocab=model.config.vocab_size, n=4, seq_len=32):
        model(batch[None])


def _stored(path):
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("config", [RTNConfig(bits=4, granularity="group", group_size=32),
                                    GPTQConfig(bits=4, group_size=32), GPTQConfig(gguf="q4_0"),
                                    RTNConfig(bits=8, granularity="channel")],
                         ids=["rtn-int4-g32", "gptq-int4-g32", "gptq-gguf-q4_0", "rtn-int8-channel"])
def test_quantized_llama_reloads_in_transformers_with_slimkits_logits(config, tmp_path):
    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, config, forward_loop=_calibrate)
    result = export_model(bundle, "compressed-tensors", tmp_path / "ct")
    check = result.checks[0]
    assert check.runtime == "transformers compressed-tensors" and check.passed and check.max_abs_diff <= 1e-3
    assert result.notes[0] == "pack-quantized from slimkit's integers: 14 Linear layers"
    qconfig = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert qconfig["quant_method"] == "compressed-tensors" and qconfig["format"] == "pack-quantized"
    (group,) = qconfig["config_groups"].values()
    scheme = config.quant_scheme() if isinstance(config, RTNConfig) else config.scheme()
    assert group["weights"]["num_bits"] == scheme.bits
    assert group["weights"]["strategy"] == ("channel" if "channel" in str(config) else "group")
    stored = _stored(tmp_path / "ct")
    assert stored["model.layers.0.mlp.up_proj.weight_packed"].dtype == torch.int32
    assert "model.layers.0.mlp.up_proj.weight" not in stored
    assert (tmp_path / "ct" / "tokenizer.json").exists()


def test_grids_it_cannot_hold_stay_dense_and_are_named(tmp_path):
    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, RTNConfig(bits=4, symmetric=False, granularity="group", group_size=32,
                                          targets={"include": ["*.mlp.*"]}))
    slimkit.apply(bundle.model, RTNConfig(bits=8, granularity="channel",
                                          targets={"include": ["*.self_attn.[qk]_proj"]}))
    slimkit.apply(bundle.model, RTNConfig(bits=4, granularity="group", group_size=16,
                                          targets={"include": ["*.layers.0.self_attn.[vo]_proj"]}))
    slimkit.apply(bundle.model, RTNConfig(bits=4, granularity="group", group_size=48,  # 64 columns: ragged
                                          targets={"include": ["*.layers.1.self_attn.[vo]_proj"]}))
    result = export_model(bundle, "compressed-tensors", tmp_path / "ct")
    assert result.checks[0].passed and result.checks[0].max_abs_diff <= 1e-3
    assert result.notes[0] == "pack-quantized from slimkit's integers: 6 Linear layers"
    assert "model.layers.1.self_attn.o_proj.weight: group 48 does not divide the 64 columns (ragged last group); " \
           "written dense" in result.notes
    assert "model.layers.0.mlp.up_proj.weight: affine (zero points): transformers cannot unpack pack-quantized " \
           "zero points (llm-compressor #1704); written dense" in result.notes
    groups = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["config_groups"]
    assert sorted((g["weights"]["num_bits"], g["weights"]["group_size"], len(g["targets"])) for g in groups.values()) \
        == [(4, 16, 2), (8, None, 4)]
    assert _stored(tmp_path / "ct")["model.layers.1.mlp.down_proj.weight"].dtype == torch.float32


def test_a_checkpoint_that_does_not_match_is_never_published(tmp_path, monkeypatch):
    bundle = tiny_llama_bundle()
    slimkit.apply(bundle.model, RTNConfig(bits=4, granularity="group", group_size=32))
    real = compressed_tensors_export.integer_weights

    def tripled(model):  # weights off their scales: the packed integers clamp
        return {path: replace(w, codes=(w.codes.float() * 3).clamp(0, 15).to(torch.uint8))
                for path, w in real(model).items()}
    monkeypatch.setattr(compressed_tensors_export, "integer_weights", tripled)
    with pytest.raises(ValueError, match=r"ct: the compressed-tensors export does not match the PyTorch model: "
                                         r"transformers compressed-tensors max \|diff\|"):
        export_model(bundle, "compressed-tensors", tmp_path / "ct")
    assert not (tmp_path / "ct").exists()
