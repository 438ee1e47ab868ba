"""Packed int4 on the real SmolLM2-135M: every decoder Linear runs the int4 kernel, accuracy holds, reload is exact."""

import pytest
import torch

import slimkit
from slimkit.data.spec import parse_data_spec
from slimkit.data.text import documents, token_windows
from slimkit.eval.metrics import perplexity
from slimkit.export.slimkit_format import load_slimkit_dir, save
from slimkit.quantize.kernels import cpu_has_native_bf16
from slimkit.quantize.pack_method import PackConfig
from slimkit.quantize.packed import packed_modules

pytestmark = pytest.mark.real_model  # runs in CI (3 CPU-minutes): the int4 kernel on the real model


def test_smollm2_int4_packed_matches_simulated_int4_and_reloads_exactly(tmp_path):
    bundle = slimkit.load_model("smollm2-135m")
    windows = token_windows(bundle.tokenizer, documents(parse_data_spec("pydoc"), "eval"), 256, 4)
    slimkit.apply(bundle.model, slimkit.RTNConfig(bits=4, granularity="group", group_size=64))
    simulated = perplexity(bundle.model, windows, batch_size=2)
    stats = slimkit.apply(bundle.model, PackConfig()).stats
    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"  # the rest of the model in bf16 only if native
    assert stats["packed"] == {"int4-weight": 210} and stats["activation_dtype"] == dtype
    packed = perplexity(bundle.model, windows, batch_size=2)
    assert abs(packed - simulated) / simulated < 0.03  # the kernel's bf16 compute costs little
    save(bundle, tmp_path / "int4")
    loaded = load_slimkit_dir(tmp_path / "int4")
    assert len(packed_modules(loaded.model)) == 210
    with torch.inference_mode():
        probe = windows[:1, :64]
        assert torch.equal(loaded.model(input_ids=probe).logits, bundle.model(input_ids=probe).logits)
