"""Steps applied one layer at a time: statistics merged over the layers, and running totals that survive a
JSON round trip exactly (what a resumed run restores)."""

from __future__ import annotations

import json

import pytest

from slimkit.prune.wanda import WandaConfig
from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig
from slimkit.stream.layer_steps import LayerSteps, merge_stats
from slimkit.stream.skeleton import layer_view
from tests._models import tiny_llama, token_batches


def test_counts_add_up_equal_values_stay_and_differing_ones_become_ranges():
    merged = merge_stats({}, {"layers": 7, "quantized_params": 100, "bits": 4, "weight_sqnr_db": 19.5})
    merged = merge_stats(merged, {"layers": 7, "quantized_params": 50, "bits": 4, "weight_sqnr_db": 18.0})
    merged = merge_stats(merged, {"layers": 7, "quantized_params": 1, "bits": 4, "weight_sqnr_db": 21.0})
    assert merged == {"layers": 21, "quantized_params": 151, "bits": 4, "weight_sqnr_db": [18.0, 21.0]}


def test_two_calibrated_steps_are_refused():
    with pytest.raises(ValueError, match="at most one calibrated step"):
        LayerSteps([GPTQConfig(), WandaConfig(sparsity=0.5)])


@pytest.mark.parametrize("config", [GPTQConfig(group_size=32), AWQConfig(group_size=32, grid=3, clip_search=False),
                                    WandaConfig(sparsity=0.5)], ids=["gptq", "awq", "wanda"])
def test_running_totals_survive_a_json_round_trip_exactly(config):
    """Layer 0 in one LayerSteps, layer 1 in another restored from the first's state as a checkpoint stores it:
    the reports equal those of one LayerSteps that did both layers."""
    model = tiny_llama(layers=2)
    ids = token_batches(n=2, seq_len=16)
    from slimkit.calib.sequential import capture_block_inputs

    inputs = capture_block_inputs(model, lambda m: [m(input_ids=b) for b in ids.split(1)], model.model.layers[0])
    layers = [model.model.layers[i] for i in range(2)]
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}

    def run(steps, index):
        prefix = f"model.layers.{index}"
        steps.apply(index, prefix, layers[index], layer_view(prefix, layers[index]), inputs, lambda: None)

    whole = LayerSteps([RTNConfig(bits=8, targets={"include": ["*.mlp.*"]}), config])
    run(whole, 0)
    run(whole, 1)
    expected = [(r.method, r.stats) for r in whole.reports()]
    model.load_state_dict(snapshot)
    first = LayerSteps([RTNConfig(bits=8, targets={"include": ["*.mlp.*"]}), config])
    run(first, 0)
    resumed = LayerSteps([RTNConfig(bits=8, targets={"include": ["*.mlp.*"]}), config])
    resumed.restore(json.loads(json.dumps(first.state())))
    run(resumed, 1)
    assert [(r.method, r.stats) for r in resumed.reports()] == expected
