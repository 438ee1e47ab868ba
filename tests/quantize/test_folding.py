"""Folding a scale through a Linear's input (shared by AWQ and SmoothQuant) keeps the float function."""

import torch

from slimkit.quantize.folding import fold_scale
from tests._models import tiny_llama, token_batches


def test_folding_a_scale_keeps_the_float_function():
    model, ids = tiny_llama().double(), token_batches(n=2)
    layer = model.model.layers[0]
    with torch.no_grad():
        before = model(input_ids=ids).logits
        s = torch.rand(64, dtype=torch.float64) + 0.5
        fold_scale(layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj], s)
        s2 = torch.rand(96, dtype=torch.float64) + 0.5
        fold_scale(layer.mlp.up_proj, [layer.mlp.down_proj], s2)
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
