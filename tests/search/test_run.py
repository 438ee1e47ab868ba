"""Budget-driven compression end to end on a trained LeNet (digits): the saved artifact meets the size budget,
the metric loss on the evaluation data meets the loss budget, the sensitivity comes from the cache the second
time, and the recipe written beside the model reproduces it exactly."""

import pytest
import torch

from slimkit.atomic import directory_bytes
from slimkit.eval.evaluate import EvalConfig, Evaluation
from slimkit.eval.settings import parse_tries
from slimkit.export.slimkit_format import REPORT_FILES
from slimkit.models.loading import load_model
from slimkit.pipeline import compress
from slimkit.recipe import load_recipe
from slimkit.search.budget import Budget, relative_loss
from slimkit.search.run import compress_to_budget
from tests._trained import trained_lenet_digits

SETTINGS = parse_tries(["bits=2,4,8", "sparsity=0.5,0.9", "codebook=3"])


def model_bytes(out):
    return sum(directory_bytes(p) for p in out.iterdir() if p.name not in REPORT_FILES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    loss = compress_to_budget(trained_lenet_digits(), Budget(max_loss=0.02, max_trials=5), SETTINGS, root / "loss",
                              eval_data="digits", cache_dir=root / "cache")
    size = compress_to_budget(trained_lenet_digits(), Budget(target_bytes=30_000, max_trials=5), SETTINGS,
                              root / "size", eval_data="digits", cache_dir=root / "cache")
    return root, loss, size


def test_the_metric_loss_on_the_evaluation_data_is_within_the_limit(runs):
    root, report, _ = runs
    original = trained_lenet_digits()
    evaluation = Evaluation(original, EvalConfig(data="digits"))
    before = evaluation.quality(original)
    after = evaluation.quality(load_model(str(root / "loss")))  # the saved model, reloaded
    assert relative_loss(before, after, higher_is_better=True) <= 0.02
    assert after == pytest.approx(report.after.value)
    assert model_bytes(root / "loss") == report.after.size_bytes < report.before.size_bytes / 4
    trials = report.search["trials"]
    assert 1 <= len(trials) <= 5 and report.search["chosen_point"] in [t["point"] for t in trials]


def test_the_saved_artifact_fits_the_target_size(runs):
    root, _, report = runs
    assert model_bytes(root / "size") <= 30_000
    assert report.after.size_bytes <= 30_000


def test_the_second_search_reused_the_cached_sensitivity(runs):
    _, first, second = runs
    assert first.search["sensitivity"]["evaluations"] > 0
    assert second.search["sensitivity"]["evaluations"] == 0
    assert second.search["sensitivity"]["scores"] == first.search["sensitivity"]["scores"]


def test_the_written_recipe_reproduces_the_chosen_model(runs, tmp_path):
    root, report, _ = runs
    recipe = load_recipe(root / "loss" / "recipe.yaml")
    assert [s.method for s in recipe.steps] == [s.method for s in report.steps]
    compress(trained_lenet_digits(), recipe, tmp_path / "again", eval_data="digits")
    chosen, again = load_model(str(root / "loss")), load_model(str(tmp_path / "again"))
    for (name, a), (_, b) in zip(chosen.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    weights = "slimkit.safetensors"
    assert (root / "loss" / weights).read_bytes() == (tmp_path / "again" / weights).read_bytes()


def test_the_reports_carry_the_search(runs):
    root, report, _ = runs
    md = (root / "loss" / "report.md").read_text()
    assert "## Budget search" in md and "metric loss ≤ 2.00%" in md
    html = (root / "loss" / "report.html").read_text()
    assert "Budget search" in html and html.count("data:image/png;base64,") == 4


def test_a_finetuned_search_recipe_trains_after_pruning_and_before_the_grid():
    from slimkit.eval.layer_groups import layer_groups
    from slimkit.search.run import recipe_for
    from slimkit.train.recipe_training import TrainSection

    groups = layer_groups(trained_lenet_digits().model)
    pruned_and_quantized = {g.name: "sparsity=0.9,bits=4" for g in groups}
    methods = [s.method for s in recipe_for(pruned_and_quantized, groups, False, EvalConfig(data="digits"),
                                            TrainSection(epochs=2)).steps]
    assert methods.index("train.finetune") == len(methods) - 2  # after the pruning, before the one grid step
    assert methods[0].startswith("prune.") and methods[-1].startswith("quant.")
    quantized_only = {g.name: "bits=4" for g in groups}
    recipe = recipe_for(quantized_only, groups, False, EvalConfig(data="digits"), TrainSection(epochs=2))
    assert recipe.steps[-1].method == "train.finetune" and recipe.train.epochs == 2
    assert recipe_for(quantized_only, groups, False, EvalConfig(data="digits")).train is None


def test_a_finetuned_trial_keeps_its_masks_and_wins_back_accuracy():
    from slimkit.eval.layer_groups import layer_groups
    from slimkit.search.run import compressed_copy, recipe_for
    from slimkit.train.recipe_training import TrainSection

    bundle = trained_lenet_digits()
    groups = layer_groups(bundle.model)
    choice = {g.name: "sparsity=0.9" for g in groups}
    cfg = EvalConfig(data="digits")
    one_shot = compressed_copy(bundle, recipe_for(choice, groups, False, cfg), None)
    tuned = compressed_copy(bundle, recipe_for(choice, groups, False, cfg, TrainSection(epochs=3)), None)
    for name, weight in one_shot.model.named_parameters():
        if name.endswith("weight"):
            tuned_weight = dict(tuned.model.named_parameters())[name]
            assert torch.equal(weight == 0, tuned_weight == 0), name  # the pruning masks did not move
    evaluation = Evaluation(bundle, cfg)
    assert evaluation.quality(tuned) > evaluation.quality(one_shot) + 0.05
    assert evaluation.quality(bundle) == evaluation.quality(trained_lenet_digits())  # the original is untouched
    # both copies record their steps (the saved trial's header carries them), the original records none
    assert {a["method"] for a in one_shot.applied} == {"prune.magnitude"} and bundle.applied == []
    assert [a["method"] for a in tuned.applied][-1] == "train.finetune"


def test_with_finetuning_the_sensitivity_is_the_cost_left_after_recovery(tmp_path):
    """One-shot 90% pruning looks ruinous; after the trials' fine-tuning most of it is won back, and the ranking
    the search follows must say so (scored minus the untouched model fine-tuned the same way, cached apart)."""
    from slimkit.eval.sensitivity import SensitivityConfig, analyze_sensitivity
    from slimkit.eval.settings import Setting
    from slimkit.search.run import sensitivity_for_search
    from slimkit.train.recipe_training import TrainSection

    bundle = trained_lenet_digits()
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    settings, probe = parse_tries(["sparsity=0.9", "codebook=2"]), SensitivityConfig(samples=256)
    one_shot = analyze_sensitivity(bundle, "digits", settings, probe, tmp_path)
    cfg = EvalConfig(data="digits")
    recovered = sensitivity_for_search(bundle, cfg, settings, probe, tmp_path, TrainSection(epochs=2))
    assert recovered.cache_file != one_shot.cache_file and recovered.recovery.startswith("finetune")
    for group, scores in recovered.scores.items():
        assert scores["sparsity=0.9"] < 0.6 * one_shot.scores[group]["sparsity=0.9"], group
    pair = Setting(codebook=2, sparsity=0.9)  # measured itself: the codebook comes after the fine-tuning
    assert all(recovered.score(g, pair) == scores[pair.key] != scores["sparsity=0.9"] + scores["codebook=2"]
               for g, scores in recovered.scores.items())
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items())  # the original untouched
    again = sensitivity_for_search(bundle, cfg, settings, probe, tmp_path, TrainSection(epochs=2))
    assert again.evaluations == 0 and again.scores == recovered.scores
