"""Training methods from a recipe: the ``train:`` section trains while QAT / gradual pruning compress."""

from __future__ import annotations

import pytest
import torch

import slimkit
from slimkit.pipeline import compress
from slimkit.quantize.record import get_quant_record
from slimkit.recipe import RecipeError, recipe_from_dict
from slimkit.train.causal_lm import finetune_causal_lm
from tests._models import lenet_bundle, tiny_llama, token_batches

NO_LATENCY = {"data": "digits", "latency": {"enabled": False}}


def _recipe(steps: list[dict], train: dict | None) -> slimkit.Recipe:
    data: dict = {"version": 1, "steps": steps, "eval": NO_LATENCY}
    if train is not None:
        data["train"] = train
    return recipe_from_dict(data, "test.yaml")


def test_training_steps_need_a_train_section_and_the_error_says_so():
    with pytest.raises(RecipeError, match=r"test.yaml: steps\[0\] \(quant.qat\).*add a 'train:' section"):
        _recipe([{"method": "quant.qat", "bits": 4}], None)
    with pytest.raises(RecipeError, match="'train' is given but no step trains.*prune.gradual.*quant.qat"):
        _recipe([{"method": "quant.rtn", "bits": 8}], {"epochs": 1})
    with pytest.raises(RecipeError, match=r"section 'train': key 'epochs'"):
        _recipe([{"method": "quant.qat", "bits": 4}], {"epochs": 0})


def test_gradual_pruning_recipe_trains_an_untrained_lenet_while_pruning_it(tmp_path):
    recipe = _recipe([{"method": "prune.gradual", "final_sparsity": 0.8, "end": 0.5, "frequency": 0.1,
                       "scope": "global"}], {"data": "digits", "epochs": 15, "lr": 0.003})
    report = compress(lenet_bundle(in_features=64), recipe, tmp_path / "out")
    assert report.before.value < 0.3  # untrained: chance level on 10 digits
    assert report.after.value > 0.85  # trained by the recipe while it was pruned to 80%
    stats = report.steps[0].stats
    assert stats["sparsity"] == pytest.approx(0.8, abs=1e-3) and stats["train_progress_reached"] == 1.0
    assert stats["train_loss_last"] < stats["train_loss_first"]
    reloaded = slimkit.load(str(tmp_path / "out"))
    weights = [m.weight for m in reloaded.model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int(w.eq(0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=1e-3)  # global scope: 80% over all layers together


def test_consecutive_gradual_steps_share_one_training_run(tmp_path):
    recipe = _recipe([{"method": "prune.gradual", "final_sparsity": 0.9, "end": 0.5, "targets": {"include": ["1"]}},
                      {"method": "prune.gradual", "final_sparsity": 0.5, "end": 0.5, "targets": {"include": ["5"]}}],
                     {"data": "digits", "epochs": 2, "samples": 512})
    report = compress(lenet_bundle(in_features=64), recipe, tmp_path / "out")
    first, second = (s.stats for s in report.steps)
    assert first["train_steps"] == second["train_steps"] == 8  # 2 epochs of 4 steps: one shared run, not two
    assert first["sparsity"] == pytest.approx(0.9, abs=1e-3) and second["sparsity"] == pytest.approx(0.5, abs=1e-2)


def test_qat_recipe_trains_weights_onto_a_4_bit_grid(tmp_path):
    recipe = _recipe([{"method": "quant.qat", "bits": 4, "learnable_scales": True, "activation_bits": 8}],
                     {"data": "digits", "epochs": 15, "lr": 0.003})
    report = compress(lenet_bundle(in_features=64), recipe, tmp_path / "out")
    assert report.after.value > 0.85
    bundle = slimkit.load(str(tmp_path / "out"))
    linear = bundle.model[1]
    record = get_quant_record(linear, "weight")
    assert record is not None and record.scheme.bits == 4
    steps = linear.weight.detach() / record.scale  # per-channel scale (out, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # every weight is an integer number of steps
    assert steps.round().min() >= -8 and steps.round().max() <= 7


def test_early_stop_still_reaches_the_final_sparsity():
    model, windows = tiny_llama(), token_batches(n=2, seq_len=16)

    def train(m, on_step):
        return finetune_causal_lm(m, windows, steps=1000, lr=1e-3, max_seconds=0.01, on_step=on_step)

    (report,) = slimkit.apply_with_training(model, [slimkit.GradualPruneConfig(final_sparsity=0.5)], train)
    assert report.stats["train_progress_reached"] < 0.1
    assert report.stats["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert model.model.layers[0].mlp.up_proj.weight.eq(0).float().mean() == pytest.approx(0.5, abs=0.02)


def test_train_section_refuses_models_it_cannot_train():
    from slimkit.models.bundle import ModelBundle
    from slimkit.train.recipe_training import TrainSection, build_trainer

    bundle = ModelBundle(torch.nn.Linear(2, 2), "encoder", "x")
    with pytest.raises(ValueError, match="can train torch, causal-lm, sentence-transformer models, not a encoder"):
        build_trainer(bundle, TrainSection(), "pydoc")


def test_a_diverging_training_run_stops_and_saves_nothing(tmp_path):
    from slimkit.numerics import NonFiniteError

    recipe = _recipe([{"method": "prune.gradual", "final_sparsity": 0.5}], {"data": "digits", "epochs": 2, "lr": 1e30})
    with pytest.raises(NonFiniteError, match=r"training step \d+: the loss is (nan|inf)"):
        compress(lenet_bundle(in_features=64), recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
