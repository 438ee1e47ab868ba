"""Distillation from a recipe: a smaller student learns from a trained teacher, and a distillation
fine-tune after one-shot pruning and quantization keeps the masks and the integer grid exactly."""

from __future__ import annotations

import copy

import pytest
import torch

import slimkit
from slimkit.api import apply
from slimkit.data.images import digits
from slimkit.eval.metrics import accuracy
from slimkit.pipeline import compress
from slimkit.quantize.record import off_grid_weights, quant_records
from slimkit.recipe import recipe_from_dict
from slimkit.train.classifier import TrainConfig, train_classifier
from tests._models import lenet_bundle, tiny_llama_bundle

NO_LATENCY = {"latency": {"enabled": False}}
LM_EVAL = {"data": "pydoc", "windows": 2, "seq_len": 32, **NO_LATENCY}


def _recipe(steps: list[dict], train: dict, eval_section: dict) -> slimkit.Recipe:
    return recipe_from_dict({"version": 1, "steps": steps, "train": train, "eval": eval_section}, "distill.yaml")


@pytest.fixture(scope="module")
def digits_teacher():
    bundle = lenet_bundle(in_features=64)
    x, y = digits("train")
    train_classifier(bundle.model, x, y, TrainConfig(epochs=15, lr=3e-3, seed=0))
    return bundle


def test_a_small_student_learns_from_a_trained_teacher_and_reloads(tmp_path, digits_teacher):
    teacher_state = copy.deepcopy(digits_teacher.model.state_dict())
    recipe = _recipe([{"method": "train.finetune"}],
                     {"data": "digits", "epochs": 12, "lr": 0.01, "seed": 1,
                      "distill": {"student": "mlp[in_features=64,hidden=[12]]", "temperature": 4.0, "alpha": 0.9,
                                  "control": True}},
                     {"data": "digits", **NO_LATENCY})
    report = compress(digits_teacher, recipe, tmp_path / "out")
    assert report.before.value > 0.9  # the teacher
    assert report.after.value > 0.8  # the 64-12-10 student, from random weights
    assert report.after.params < report.before.params / 10
    assert all(torch.equal(v, teacher_state[k]) for k, v in digits_teacher.model.state_dict().items())
    reloaded = slimkit.load(str(tmp_path / "out"))
    assert reloaded.arch == {"name": "mlp", "kwargs": {"in_features": 64, "hidden": [12]}}
    x, y = digits("test")
    assert accuracy(reloaded.model, x.flatten(1), y) == pytest.approx(report.after.value, abs=1e-6)
    assert not (tmp_path / "out.training").exists()  # checkpoints go once the output is written
    table = report.distillation
    assert table["teacher"] is report.before and table["distilled"] is report.after
    control = table["without_distillation"]
    assert control.params == report.after.params
    assert control.size_bytes == pytest.approx(report.after.size_bytes, abs=64)
    assert control.value != report.after.value  # trained on labels alone: another model
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| quantity | teacher | student without distillation | distilled student |" in markdown
    assert f"| accuracy | {report.before.value:.4f} | {control.value:.4f} | {report.after.value:.4f} |" in markdown


def _one_shot(bundle, steps):
    for step in steps:
        apply(bundle.model, step, None)
    return bundle


def test_a_distillation_fine_tune_keeps_masks_and_the_integer_grid_and_saves_packed(tmp_path):
    one_shot = [{"method": "prune.magnitude", "sparsity": 0.5},
                {"method": "quant.rtn", "bits": 4, "granularity": "group", "group_size": 32}]
    recipe = _recipe([*one_shot, {"method": "train.finetune"}],
                     {"samples": 8, "batch_size": 2, "lr": 3e-3, "distill": {"alpha": 1.0, "temperature": 2.0}},
                     LM_EVAL)
    reference = _one_shot(tiny_llama_bundle(), recipe.steps[:2])  # the same one-shot steps, without training
    report = compress(tiny_llama_bundle(), recipe, tmp_path / "out", calib_guard=False)
    stats = report.steps[-1].stats
    assert stats["masked_weights"] == 14 and stats["weights_on_grid"] == 14  # 2 layers x 7 Linears
    reloaded = slimkit.load(str(tmp_path / "out"))
    changed = 0
    for name, record in quant_records(reference.model).items():
        before, after = reference.model.get_parameter(name), reloaded.model.get_parameter(name)
        assert not ((before == 0) & (after != 0)).any(), name  # every pruned weight is still exactly zero
        # (a kept weight may move onto the grid's zero level: a legitimate int4 value, not a pruned one)
        loaded = quant_records(reloaded.model)[name]
        assert torch.equal(loaded.scale, record.scale) and torch.equal(loaded.zero, record.zero)  # same grid
        changed += int((before != after).sum())
    assert changed > 0  # the distillation moved weights between grid points
    assert off_grid_weights(reloaded.model) == {}
    header = (tmp_path / "out" / "slimkit.json").read_text()
    assert header.count('"codec":"int"') == 14  # stored as packed integers, as before the fine-tune


def test_after_sparsegpt_the_fine_tuned_model_has_exactly_the_same_zeros(tmp_path):
    one_shot = [{"method": "prune.sparsegpt", "sparsity": 0.5}]
    recipe = _recipe([*one_shot, {"method": "train.finetune"}],
                     {"samples": 8, "batch_size": 2, "lr": 3e-3, "distill": {"alpha": 0.5}}, LM_EVAL)
    reference = tiny_llama_bundle()
    report = compress(reference, recipe, tmp_path / "out", calib_guard=False)
    before = report.steps[0].stats["sparsity"]
    reloaded = slimkit.load(str(tmp_path / "out"))
    linears = [m for n, m in reloaded.model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    zeros = sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
    assert zeros == pytest.approx(before, abs=1e-9) and report.steps[-1].stats["masked_sparsity"] == 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_structured_pruning_then_distillation_recovers_towards_the_teacher(tmp_path, seed):
    teacher = tiny_llama_bundle()
    with torch.no_grad():  # a random tiny Llama barely uses its FFNs: make them matter, so halving them hurts
        for layer in teacher.model.model.layers:
            for proj in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                proj.weight.mul_(10 ** 0.5)
    steps = [{"method": "prune.structured", "structure": "ffn", "importance": "l2", "fraction": 0.5},
             {"method": "train.finetune"}]
    train = {"samples": 16, "batch_size": 4, "lr": 1e-3, "eval_every": 2, "keep_best": True, "seed": seed,
             "distill": {"alpha": 1.0, "features": [{"student": "model.layers.1", "teacher": "model.layers.1"}]}}
    report = compress(teacher, _recipe(steps, train, LM_EVAL), tmp_path / "out", calib_guard=False)
    stats = report.steps[-1].stats
    # closer to the teacher on held-out windows than the pruned model was before training (0.0194 -> 0.0155)
    assert stats["val_loss_best"] < 0.9 * stats["val_loss_before"]
    reloaded = slimkit.load(str(tmp_path / "out"))
    assert reloaded.model.model.layers[0].mlp.up_proj.out_features == 48  # 96 FFN channels halved, reloads
