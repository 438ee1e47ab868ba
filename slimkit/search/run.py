"""Budget-driven compression (``slimkit compress MODEL --target-size 40MB`` / ``--max-metric-loss 1%``).

Measures the original, runs (or reads from its cache) the sensitivity analysis on the evaluation data's
validation part, builds the search path from sensitivity per byte saved, and tries points of it as real
recipes (RTN / magnitude / k-means, or GPTQ / SparseGPT when calibration data is given): each trial
compresses a copy of the model, saves it to measure its true bytes on disk and evaluates it on the
evaluation split (:mod:`slimkit.search.budget` decides which points). With ``finetune`` (a recipe ``train:``
section) every trial also trains: ``train.finetune`` right after its pruning steps (masks fixed), or after
its quantization steps when it prunes nothing (integer grids fixed), because one-shot pruning is what costs
accuracy and fine-tuning is how it is won back. The kept trial's recipe then goes
through the ordinary :func:`slimkit.pipeline.compress`, which writes the model, the reports and
``recipe.yaml``, so rerunning that recipe reproduces the chosen model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimkit.config import BaseConfig
from slimkit.data.loops import calibration_loop
from slimkit.data.mix import parse_mix
from slimkit.eval.evaluate import EvalConfig, Evaluation, LatencyConfig, default_data
from slimkit.eval.layer_groups import LayerGroup
from slimkit.eval.sensitivity import UNTOUCHED, SensitivityConfig, SensitivityTable, analyze_sensitivity
from slimkit.eval.settings import Setting, search_options
from slimkit.export.slimkit_format import saved_size
from slimkit.method import ForwardLoop
from slimkit.models.bundle import ModelBundle
from slimkit.models.loading import load_model
from slimkit.pipeline import apply_steps, compress
from slimkit.preflight import check_compress
from slimkit.progress import console, status
from slimkit.recipe import Recipe
from slimkit.report.report import Report
from slimkit.search.budget import Budget, Trial, choose_point, relative_loss
from slimkit.search.plan import Option, PathPoint, search_path
from slimkit.train.finetune import FinetuneConfig
from slimkit.train.recipe_training import TrainSection, build_trainer


def path_options(table: SensitivityTable, settings: list[Setting]) -> dict[str, list[Option]]:
    """Every group's options for the search: untouched, each single setting, each sparsity × codebook pair."""
    options: dict[str, list[Option]] = {}
    for group in table.groups:
        sizes = table.bytes[group.name]
        opts = [Option(UNTOUCHED, sizes[UNTOUCHED], 0.0)]
        opts += [Option(s.key, sizes[s.key], table.score(group.name, s)) for s in search_options(settings)]
        options[group.name] = opts
    return options


def recipe_for(choice: dict[str, str], groups: list[LayerGroup], calibrated: bool, eval_cfg: EvalConfig,
               finetune: TrainSection | None = None) -> Recipe:
    """An ordinary recipe applying ``choice`` (group -> setting key): one pruning step per sparsity, then one
    quantization or weight-sharing step per grid, each targeting its groups' globs; with ``finetune``, a
    ``train.finetune`` step after the pruning steps (or at the end when nothing is pruned) trained as it says."""
    prune: dict[float, list[str]] = {}
    grids: dict[Setting, list[str]] = {}
    for group in groups:
        key = choice.get(group.name, UNTOUCHED)
        if key == UNTOUCHED:
            continue
        setting = Setting.from_key(key)
        if setting.sparsity is not None:
            prune.setdefault(setting.sparsity, []).extend(group.include)
        grid = Setting(setting.bits, setting.group_size, setting.codebook)
        if grid.key:
            grids.setdefault(grid, []).extend(group.include)
    pruning = [c for sparsity, include in sorted(prune.items())
               for c in Setting(sparsity=sparsity).configs(tuple(include), calibrated)]
    grid_steps = [c for grid, include in sorted(grids.items(), key=lambda kv: kv[0].key)
                  for c in grid.configs(tuple(include), calibrated)]
    if not pruning and not grid_steps:
        raise ValueError("the chosen configuration leaves every layer untouched")
    recovery: list[BaseConfig] = [FinetuneConfig()] if finetune is not None else []
    steps = pruning + recovery + grid_steps if pruning else grid_steps + recovery
    return Recipe(steps=tuple(steps), eval=eval_cfg, train=finetune)


def sensitivity_for_search(bundle: ModelBundle, eval_cfg: EvalConfig, settings: list[Setting],
                           analysis: SensitivityConfig | None, cache_dir: Path | None,
                           finetune: TrainSection | None) -> SensitivityTable:
    """The sensitivity table a search ranks by, on ``eval_cfg.data``'s validation part: one-shot, or with
    ``finetune`` each pair scored after the fine-tuning the trials get (data-free methods, as one-shot)."""
    data = str(eval_cfg.data)
    if finetune is None:
        return analyze_sensitivity(bundle, data, settings, analysis, cache_dir)

    def recovered(group: LayerGroup | None, setting: Setting | None) -> ModelBundle:
        if group is None or setting is None:
            return compressed_copy(bundle, Recipe(steps=(FinetuneConfig(),), eval=eval_cfg, train=finetune), None)
        return compressed_copy(bundle, recipe_for({group.name: setting.key}, [group], False, eval_cfg, finetune),
                               None)

    key = f"finetune {finetune.model_dump_json()} seq_len {eval_cfg.seq_len}"
    return analyze_sensitivity(bundle, data, settings, analysis, cache_dir, recovered, key)


def compressed_copy(bundle: ModelBundle, recipe: Recipe, loop: ForwardLoop | None) -> ModelBundle:
    """A copy of ``bundle`` with ``recipe``'s steps applied (the original is left as it is); training steps
    train as the recipe's ``train:`` section says, on its data (default: the recipe's evaluation data)."""
    trial = copy.copy(bundle)
    trial.model = copy.deepcopy(bundle.model)
    trial.applied = list(bundle.applied)
    trainer = None if recipe.train is None else build_trainer(
        trial, recipe.train, recipe.eval.data or default_data(trial), recipe.eval.seq_len)
    apply_steps(trial, recipe, trainer, loop)  # records each step, so the saved trial carries its configs
    return trial


def trial_runner(bundle: ModelBundle, path: list[PathPoint], recipes: dict[int, Recipe], evaluation: Evaluation,
                 before: float, loop: ForwardLoop | None,
                 on_trial: Callable[[Trial, ModelBundle], None] | None = None) -> Callable[[int], Trial]:
    """``try_point(i)``: compress a copy with point ``i``'s recipe, save it (true bytes), score it on ``evaluation``;
    ``on_trial(trial, compressed copy)`` may keep the copy (a benchmark that would otherwise compress it again)."""

    def try_point(index: int) -> Trial:
        start = time.perf_counter()
        with status(f"trial: compressing, saving and evaluating search point {index} of {len(path) - 1}"):
            trial_bundle = compressed_copy(bundle, recipes[index], loop)
            size = saved_size(trial_bundle)
            value = evaluation.quality(trial_bundle)
        loss = relative_loss(before, value, evaluation.metric_name != "perplexity")
        trial = Trial(index, path[index].bytes, size, value, loss, time.perf_counter() - start)
        console.print(f"trial {index}: estimated {path[index].bytes:,} B, saved {size:,} B, "
                      f"{evaluation.metric_name} {value:.4f} (loss {loss:+.2%}), {trial.seconds:.1f} s")
        if on_trial is not None:
            on_trial(trial, trial_bundle)
        return trial

    return try_point


def lazy_recipes(path: list[PathPoint], groups: list[LayerGroup], calibrated: bool,
                 eval_cfg: EvalConfig, finetune: TrainSection | None = None) -> dict[int, Recipe]:
    """Point index -> its recipe, built when first asked for (a path has hundreds of points, trials use few)."""

    class Recipes(dict):  # type: ignore[type-arg]
        def __missing__(self, index: int) -> Recipe:
            self[index] = recipe_for(path[index].choice, groups, calibrated, eval_cfg, finetune)
            return self[index]

    return Recipes()


def _search_section(budget: Budget, table: SensitivityTable, path: list[PathPoint], trials: list[Trial],
                    kept: Trial, before: float, base_bytes: int) -> dict[str, Any]:
    return {"budget": {"target_bytes": budget.target_bytes, "max_loss": budget.max_loss,
                       "max_trials": budget.max_trials, "text": budget.describe()},
            "original": {"metric": before, "size_bytes": base_bytes},
            "sensitivity": table.to_dict(),
            "path": [{"bytes": p.bytes, "cost": p.cost} for p in path],
            "trials": [t.to_dict() for t in trials], "chosen_point": kept.point,
            "choice": path[kept.point].choice}


def compress_to_budget(model: str | ModelBundle, budget: Budget, settings: list[Setting], out: str | Path, *,
                       calib: Sequence[str] = (), eval_data: str | None = None, calib_samples: int = 32,
                       overwrite: bool = False, calib_guard: bool = True, eval_config: EvalConfig | None = None,
                       analysis: SensitivityConfig | None = None, cache_dir: Path | None = None,
                       finetune: TrainSection | None = None) -> Report:
    """Search per-layer settings that meet ``budget``, then compress ``model`` with them into ``out``.

    Args:
        model: model spec or loaded bundle.
        budget: size and/or metric-loss limits and the number of trials.
        settings: the single settings layers may take (:func:`slimkit.eval.settings.parse_tries`).
        out: output directory, written by :func:`slimkit.pipeline.compress` with the chosen recipe.
        calib: calibration data (mix); when given, the search applies GPTQ / SparseGPT instead of RTN / magnitude.
        eval_data: evaluation data spec; its validation part feeds the sensitivity probe.
        eval_config: the evaluation settings (windows, latency, ...); ``eval_data`` overrides its data.
        analysis: the sensitivity probe budget; cache_dir: where its results are cached.
        finetune: train every trial (and the chosen model) after its one-shot steps, as this section says.
    """
    out = Path(out)
    eval_cfg = eval_config or EvalConfig()
    eval_cfg = eval_cfg.model_copy(update={"data": eval_data}) if eval_data else eval_cfg
    check_compress(model, out, data_specs=(eval_cfg.data,), calib=list(calib), calib_samples=calib_samples,
                   overwrite=overwrite)
    if isinstance(model, str):
        with status(f"loading {model}"):
            bundle = load_model(model)
    else:
        bundle = model
    evaluation = Evaluation(bundle, eval_cfg.model_copy(update={"latency": LatencyConfig(enabled=False)}))
    data = str(evaluation.spec)
    eval_cfg = eval_cfg.model_copy(update={"data": data})
    before, base_bytes = evaluation.quality(bundle), saved_size(bundle)
    console.print(f"original: {evaluation.metric_name} {before:.4f}, {base_bytes:,} bytes; budget: {budget.describe()}")
    table = sensitivity_for_search(bundle, eval_cfg, settings, analysis, cache_dir, finetune)
    fixed = base_bytes - sum(table.bytes[g.name][UNTOUCHED] for g in table.groups)
    path = search_path(path_options(table, settings), fixed)
    loop = calibration_loop(bundle, parse_mix(list(calib)), calib_samples, eval_cfg.seq_len) if calib else None
    recipes = lazy_recipes(path, table.groups, bool(calib), eval_cfg, finetune)
    kept, trials = choose_point(path, budget, trial_runner(bundle, path, recipes, evaluation, before, loop))
    console.print(f"chose search point {kept.point}: {kept.size_bytes:,} bytes, loss {kept.loss:+.2%} "
                  f"({len(trials)} trials)")
    search = _search_section(budget, table, path, trials, kept, before, base_bytes)
    return compress(bundle, recipes[kept.point], out, calib=list(calib) or None, eval_data=data,
                    calib_samples=calib_samples, overwrite=overwrite, calib_guard=calib_guard, search=search)
