"""The layer-sequential lifecycle: calibrate rewrites each block on the inputs of the already-compressed blocks
before it, once; finalize only reports, and refuses a method that never saw calibration data."""

from typing import Any, Literal

import pytest
import torch

from slimkit.calib.layer_method import LayerSequentialMethod
from slimkit.calib.stats import InputStats
from slimkit.config import BaseConfig
from slimkit.targets import Target
from tests._models import tiny_llama, token_batches


class HalvingConfig(BaseConfig):
    method: Literal["test.halving"] = "test.halving"


class Halving(LayerSequentialMethod[HalvingConfig]):
    """Halves every targeted weight and remembers the input norms each Linear was shown (never registered)."""

    label = "Halving"
    with_hessian = False

    def __init__(self, config: HalvingConfig) -> None:
        super().__init__(config)
        self.seen: dict[str, torch.Tensor] = {}

    def compress_linear(self, target: Target, stats: InputStats) -> None:
        self.seen[target.module_name] = stats.column_norms().clone()
        with torch.no_grad():
            target.param.mul_(0.5)

    def summary(self) -> dict[str, Any]:
        return {"halved": len(self.seen)}


def loop_over(ids):
    def loop(model):
        for batch in ids.split(2):
            model(input_ids=batch)
    return loop


def q_proj_input_norms(model, ids):
    """‖X_j‖₂ of the inputs of every block's q_proj over ``ids``, float64 (hidden,) each."""
    sums, handles = {}, []
    for i, layer in enumerate(model.model.layers):
        def hook(module, args, i=i):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[i] = sums.get(i, 0) + x.pow(2).sum(0)
        handles.append(layer.self_attn.q_proj.register_forward_pre_hook(hook))
    with torch.no_grad():
        loop_over(ids)(model)
    for h in handles:
        h.remove()
    return {i: s.sqrt() for i, s in sums.items()}


def test_each_block_is_calibrated_on_the_outputs_of_the_compressed_blocks_before_it():
    model, ids = tiny_llama(layers=3), token_batches(n=4)
    float_norms = q_proj_input_norms(model, ids)
    method = Halving(HalvingConfig())
    with torch.no_grad():
        method.calibrate(model, loop_over(ids))
    assert list(method.seen)[:7] == [f"model.layers.0.{n}" for n in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj")]
    # q_proj's input depends only on the blocks before it, all of them compressed when it was calibrated
    compressed_norms = q_proj_input_norms(model, ids)
    for i in range(3):
        seen = method.seen[f"model.layers.{i}.self_attn.q_proj"]
        torch.testing.assert_close(seen, compressed_norms[i], rtol=1e-5, atol=1e-6)
        assert (i == 0) == torch.allclose(seen, float_norms[i], rtol=1e-3), f"block {i}"
    assert method.finalize(model) == {"linears": 21, "halved": 21}


def test_finalize_without_calibration_and_a_second_calibration_are_errors():
    model, ids = tiny_llama(layers=1), token_batches(n=2)
    method = Halving(HalvingConfig())
    with pytest.raises(RuntimeError, match=r"test.halving needs calibration: use slimkit.apply\(model, config, "):
        method.finalize(model)
    method.calibrate(model, loop_over(ids))
    weight = model.model.layers[0].mlp.down_proj.weight.clone()
    with pytest.raises(RuntimeError, match="test.halving: calibrate\\(\\) already compressed the model"):
        method.calibrate(model, loop_over(ids))
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, weight)  # not compressed twice
