"""Non-finite numbers stop every method with a message naming the layer or block (issue 21, item 2).

One NaN weight used to spread through RTN's per-row scale to a whole row of int8 codes, and NaN
calibration activations made GPTQ fail with a message about an indefinite Hessian. The shared guard
(:mod:`slimkit.numerics`) runs where every method's weights pass (``slimkit.prepare``) and where the
layer-sequential methods see their calibration inputs (:mod:`slimkit.calib.sequential`).
"""

import pytest
import torch

import slimkit
from slimkit.numerics import NonFiniteError, check_finite
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.prune.wanda import WandaConfig
from slimkit.quantize.awq import AWQConfig
from slimkit.quantize.gptq import GPTQConfig
from tests._models import tiny_llama, token_batches

SEQUENTIAL = [pytest.param(GPTQConfig(bits=4, group_size=32), id="gptq"),
              pytest.param(AWQConfig(bits=4, group_size=32), id="awq"),
              pytest.param(SparseGPTConfig(sparsity=0.5), id="sparsegpt"),
              pytest.param(WandaConfig(sparsity=0.5), id="wanda")]


def loop_over(ids):
    def loop(model):
        for batch in ids.split(2):
            model(input_ids=batch)
    return loop


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_rtn_refuses_a_non_finite_weight_and_names_the_layer(bad):
    model = tiny_llama()
    weight = model.model.layers[1].mlp.up_proj.weight
    with torch.no_grad():
        weight[3, 7] = bad
    untouched = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    with pytest.raises(NonFiniteError, match=r"quant\.rtn: weight model\.layers\.1\.mlp\.up_proj\.weight holds"):
        slimkit.apply(model, slimkit.RTNConfig(bits=8))
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, untouched)  # stopped before any change


def test_weights_that_turn_non_finite_during_a_user_driven_run_are_caught_at_finalize():
    model = tiny_llama()
    ctl = slimkit.prepare(model, slimkit.GradualPruneConfig(final_sparsity=0.5))
    with torch.no_grad():  # what a diverging step of the user's own training loop leaves behind
        model.model.layers[0].mlp.down_proj.parametrizations.weight.original[1, 2] = float("inf")
    ctl.step(1.0)
    with pytest.raises(NonFiniteError, match=r"after prune\.gradual: weight model\.layers\.0\.mlp\.down_proj\.weight"):
        ctl.finalize()


def test_a_nan_outside_the_targets_is_not_the_methods_business():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    targets = {"include": ["*up_proj*"]}
    report = slimkit.apply(model, slimkit.RTNConfig(bits=8, targets=targets))
    assert report.stats["layers"] == 2


@pytest.mark.parametrize("config", SEQUENTIAL)
def test_sequential_methods_refuse_non_finite_weights(config):
    model, ids = tiny_llama(), token_batches(n=4)
    with torch.no_grad():
        model.model.layers[0].self_attn.k_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"weight model\.layers\.0\.self_attn\.k_proj\.weight holds 1 NaN"):
        slimkit.apply(model, config, loop_over(ids))


@pytest.mark.parametrize("config", SEQUENTIAL)
def test_sequential_methods_refuse_non_finite_calibration_activations(config):
    model, ids = tiny_llama(), token_batches(n=4)
    with torch.no_grad():  # an embedding row is not a target: the NaN reaches the blocks as an activation
        model.model.embed_tokens.weight[int(ids[1, 5])] = float("nan")
    with pytest.raises(NonFiniteError, match=r"calibration activations entering model\.layers\.0 \(batch 0\)"):
        slimkit.apply(model, config, loop_over(ids))


def test_an_overflow_inside_a_block_is_named_by_its_linear():
    model, ids = tiny_llama(), token_batches(n=4)
    with torch.no_grad():  # finite weights whose outputs overflow float32 inside block 0
        model.model.layers[0].mlp.up_proj.weight.mul_(1e30)
        model.model.layers[0].mlp.gate_proj.weight.mul_(1e30)
    config = GPTQConfig(bits=4, group_size=32, targets={"include": ["*mlp*"]})
    with pytest.raises(NonFiniteError, match=r"GPTQ: calibration activations entering model.layers.0.mlp.down_proj"):
        slimkit.apply(model, config, loop_over(ids))


def test_check_finite_passes_finite_and_integer_tensors():
    check_finite(torch.randn(5, 5), "x")
    check_finite(torch.arange(4), "ids")
    with pytest.raises(ValueError, match="x holds 0 NaN and 2 infinite values"):  # a ValueError: the CLI's exit 2
        check_finite(torch.tensor([1.0, float("inf"), -float("inf")]), "x")


def test_the_cli_stops_with_one_paragraph_and_exit_2_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from slimkit.cli import app
    from tests._models import lenet_bundle

    model = lenet_bundle(in_features=64).model
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    torch.save(model.state_dict(), tmp_path / "nan.pt")
    recipe = tmp_path / "rtn.yaml"
    recipe.write_text("version: 1\nsteps:\n  - {method: quant.rtn, bits: 8}\n"
                      "eval: {data: digits, latency: {enabled: false}}\n")
    result = CliRunner().invoke(app, ["compress", f"lenet-300-100[in_features=64]={tmp_path / 'nan.pt'}",
                                      "--recipe", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "quant.rtn: weight 1.weight holds 1 NaN and 0 infinite values" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
