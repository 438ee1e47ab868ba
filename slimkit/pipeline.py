"""The compress pipeline behind ``slimkit compress``: load → measure → apply steps → save → measure.

Everything that can be checked without loading the model (output location and free space, model
name, data specs) is checked first (:mod:`slimkit.preflight`). The output directory is written
atomically in the recipe's ``export.format``: it appears with the model, ``slimkit.json``,
``recipe.yaml``, ``report.json``, ``report.md``, ``report.png`` and ``report.html`` together, or not at all.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from slimkit.api import apply, apply_with_training
from slimkit.atomic import atomic_directory, directory_bytes
from slimkit.config import BaseConfig
from slimkit.data.loops import calibration_loop
from slimkit.data.mix import MixPart, parse_mix
from slimkit.eval.calibration_guard import calibration_free_steps, run_calibration_guard
from slimkit.eval.evaluate import Evaluation, default_data
from slimkit.eval.layer_groups import layer_storage
from slimkit.export.formats import ExportResult, check_requirements, export_format, write_checked
from slimkit.export.slimkit_format import REPORT_FILES, check_output, saved_size, write_into
from slimkit.export.storage import storage_breakdown
from slimkit.memory import MemoryPlan, memory_note, plan_memory
from slimkit.method import ForwardLoop, StepReport
from slimkit.models.bundle import ModelBundle
from slimkit.models.loading import load_model
from slimkit.preflight import check_compress
from slimkit.progress import console, status
from slimkit.quantize.packed import packed_header
from slimkit.quantize.record import off_grid_weights, quant_records
from slimkit.recipe import Recipe
from slimkit.report.html import report_html
from slimkit.report.plots import plot_before_after
from slimkit.report.report import Report
from slimkit.train.distributed import is_main_process
from slimkit.train.recipe_training import Trainer, build_trainer
from slimkit.train.teachers import default_checkpoint_dir, distillation_models, run_fingerprint


def compress(model: str | ModelBundle, recipe: Recipe, out: str | Path, *, calib: str | Sequence[str] | None = None,
             eval_data: str | None = None, calib_samples: int = 32, overwrite: bool = False,
             calib_guard: bool = True, search: dict[str, Any] | None = None, stream: bool = False,
             max_memory: int | None = None, spill: bool | None = None) -> Report:
    """Apply ``recipe`` to ``model`` and write the compressed model plus a before/after report.

    Args:
        model: a model spec (see :func:`slimkit.models.load_model`) or a loaded bundle.
        recipe: the validated recipe.
        out: output directory; must not exist unless ``overwrite``.
        calib: calibration data spec (its calibration split), or a mix of several (``SPEC@WEIGHT`` each,
            sampled in proportion, see :mod:`slimkit.data.mix`); defaults to the eval data's kind.
        eval_data: evaluation data spec; overrides the recipe's ``eval.data``.
        calib_samples: number of calibration samples (windows, sentences or images).
        overwrite: replace an existing slimkit output directory (atomically); anything else at ``out``
            (a file, a folder slimkit did not write, files added to an output) is refused.
        calib_guard: when calibrated steps (GPTQ, AWQ, SparseGPT, Wanda) have a calibration-free counterpart,
            also measure that counterpart on the evaluation data and warn if the calibrated model is worse
            (:mod:`slimkit.eval.calibration_guard`); costs one extra data-free compression and evaluation.
        search: what the budget search that chose ``recipe`` measured (:mod:`slimkit.search.run`), for the reports.
        stream: compress a Hugging Face causal LM directory one decoder layer at a time (:mod:`slimkit.stream`).
        max_memory: bytes the job may use (default: this machine's RAM); a job estimated above it streams when
            it can and fits, else is refused before the model loads (:func:`slimkit.memory.plan_memory`).
        spill: with streaming, keep activations on disk (``None``: only when they would not fit).
    """
    out = Path(out)
    train_data = recipe.train.data if recipe.train else None
    calib_parts = [calib] if isinstance(calib, str) else list(calib or [])
    if len(calib_parts) > 1 and recipe.train and not recipe.train.data:
        raise ValueError(f"the recipe trains on the calibration data, but --calib is a mix of {len(calib_parts)} "
                         "specs; name the training data in the recipe's train.data")
    check_compress(model, out, data_specs=(eval_data or recipe.eval.data, train_data), calib=calib_parts,
                   calib_samples=calib_samples, overwrite=overwrite)
    if recipe.export.format != "slimkit":
        check_requirements(export_format(recipe.export.format))  # a missing extra, before the model loads
    plan = _memory_plan(model, recipe, eval_data, calib_samples, calib_guard, stream, max_memory, spill)
    if plan is not None and plan.stream:
        from slimkit.stream.pipeline import compress_streamed

        if plan.reason:
            console.print(f"compressing one decoder layer at a time (as with --stream): {plan.reason}")
        assert isinstance(model, str)
        return compress_streamed(model, recipe, out, calib=calib_parts, eval_data=eval_data,
                                 calib_samples=calib_samples, overwrite=overwrite, plan=plan)
    if isinstance(model, str):
        with status(f"loading {model}"):
            bundle = load_model(model)
    else:
        bundle = model
    eval_cfg = recipe.eval.model_copy(update={"data": eval_data}) if eval_data else recipe.eval
    evaluation = Evaluation(bundle, eval_cfg)
    console.print(f"measuring the original {bundle.kind} model")
    before = evaluation.measure(bundle, saved_size(bundle))
    converted = _conversion_notes(bundle, evaluation)  # before any step: the conversion alone
    distill = recipe.train.distill if recipe.train else None
    bundle, teacher = distillation_models(bundle, distill, recipe.train.seed if recipe.train else 0)
    mix = parse_mix(calib_parts or [eval_cfg.data or default_data(bundle)])
    loop = _calibration(bundle, recipe, mix, calib_samples, eval_cfg.seq_len)
    checkpoints = default_checkpoint_dir(out)  # a killed run resumes from here when rerun
    fingerprint = run_fingerprint(str(model if isinstance(model, str) else bundle.source), recipe.to_dict(),
                                  calib_parts, eval_data, calib_samples)
    trainer = build_trainer(bundle, recipe.train, str(mix[0].spec), eval_cfg.seq_len, teacher=teacher,
                            checkpoint_dir=checkpoints, fingerprint=fingerprint) if recipe.train else None
    guard_steps = calibration_free_steps(recipe.steps) if calib_guard else None
    original = _copy_bundle(bundle) if guard_steps is not None else None
    control = _copy_bundle(bundle) if distill is not None and distill.control else None  # before any step
    control_trainer = build_trainer(control, recipe.train.model_copy(update={"distill": None}), str(mix[0].spec),
                                    eval_cfg.seq_len, checkpoint_dir=Path(f"{checkpoints}-control"),
                                    fingerprint=f"{fingerprint}-control") if control and recipe.train else None
    steps = apply_steps(bundle, recipe, trainer, loop)
    if control is not None:
        console.print("the control: the same student through the same steps, trained without distillation")
        apply_steps(control, recipe, control_trainer, loop)
    if not is_main_process():  # under torchrun every process trains; rank 0 alone writes and measures
        return Report(str(model if isinstance(model, str) else bundle.source), steps, before, before, None,
                      ["not the main process of a multi-process run: rank 0 wrote and measured the output"])
    check_output(out, overwrite)  # again: the directory may have changed while the model was compressed
    with atomic_directory(out, overwrite=overwrite) as tmp:
        exported = _export_beside(bundle, recipe, tmp)  # first: the header lists it among slimkit's files
        with status(f"saving to {out}"):
            write_into(bundle, tmp)
        console.print("measuring the compressed model")
        after = evaluation.measure(bundle, directory_bytes(tmp) - (exported.bytes if exported else 0))
        guard = None
        if original is not None and guard_steps is not None:
            with status(f"calibration guard: {' → '.join(s.method for s in guard_steps)} on the original"):
                guard = run_calibration_guard(original, recipe.steps, evaluation, after.value,
                                              ", ".join(str(p) for p in mix))
            del original
        storage = storage_breakdown(tmp, (exported.path.name,) if exported else ()).to_dict()
        report = Report(str(model if isinstance(model, str) else bundle.source), steps, before, after,
                        str(out), [*converted, *_notes(bundle), memory_note(plan)], guard, storage=storage,
                        export=exported.to_dict() if exported else None, search=search,
                        layers=layer_storage(bundle.model))
        if control is not None and teacher is not None:
            with status("measuring the teacher and the control"):
                report.distillation = {"teacher": evaluation.measure(teacher, saved_size(teacher))
                                       if distill and distill.teacher else before,
                                       "without_distillation": evaluation.measure(control, saved_size(control)),
                                       "distilled": after}
        write_reports(report, recipe, tmp)
    if recipe.train and not recipe.train.checkpoint_dir:
        for directory in (checkpoints, Path(f"{checkpoints}-control")):
            shutil.rmtree(directory, ignore_errors=True)  # the output is written: nothing left to resume
    return report


def _memory_plan(model: str | ModelBundle, recipe: Recipe, eval_data: str | None, calib_samples: int,
                 calib_guard: bool, stream: bool, max_memory: int | None, spill: bool | None) -> MemoryPlan | None:
    """How the job runs within ``max_memory`` (None for a model already in memory, which nothing can stream)."""
    if not isinstance(model, str):
        if stream:
            raise ValueError("--stream reads a model directory layer by layer; this model is already in memory")
        if max_memory is not None:
            raise ValueError("--max-memory is checked before a model loads; this model is already in memory")
        return None
    eval_cfg = recipe.eval.model_copy(update={"data": eval_data}) if eval_data else recipe.eval
    plan = plan_memory(model, recipe, calib_samples=calib_samples, eval_config=eval_cfg, stream=stream,
                       max_memory=max_memory, calib_guard=calib_guard)
    return dataclasses.replace(plan, spill=spill) if plan.stream and spill is not None else plan


def write_reports(report: Report, recipe: Recipe, directory: Path) -> None:
    """``recipe.yaml``, ``report.json``, ``report.md``, ``report.png`` and the self-contained ``report.html``."""
    files = {name.rpartition(".")[2]: directory / name for name in REPORT_FILES}
    files["yaml"].write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    files["json"].write_text(report.to_json())
    files["md"].write_text(report.to_markdown() + f"\n![before and after]({files['png'].name})\n")
    plot_before_after(report, files["png"])
    files["html"].write_text(report_html(report, files["png"]), encoding="utf-8")


def _export_beside(bundle: ModelBundle, recipe: Recipe, directory: Path) -> ExportResult | None:
    """Write the recipe's export format (if not only the slimkit directory) as ``model<suffix>``."""
    name = recipe.export.format
    if name == "slimkit":
        return None
    with status(f"exporting to {name}"):
        result = write_checked(bundle, name, directory / f"model{export_format(name).suffix}", recipe.export.options)
    result.path = Path(result.path.name)  # relative to the output directory
    for check in result.checks:
        console.print(f"{name} checked in {check.runtime}: max |diff| {check.max_abs_diff:.3g} "
                      f"(tolerance {check.tolerance:.3g})")
    return result


def apply_steps(bundle: ModelBundle, recipe: Recipe, trainer: Trainer | None,
                 loop: ForwardLoop | None) -> list[StepReport]:
    """Apply the recipe's steps to ``bundle`` in order (training groups through ``trainer``), recording each."""
    steps: list[StepReport] = []
    for group in _training_groups(recipe.steps):
        if group[0].needs_training:
            assert trainer is not None  # the recipe validator demands a train section
            console.print(f"training with {', '.join(s.method for s in group)}")
            results = apply_with_training(bundle.model, group, trainer, loop)
        else:
            with status(f"applying {group[0].method}"):
                results = [apply(bundle.model, group[0], loop if group[0].needs_calibration else None)]
        for result in results:
            console.print(f"applied {result.method} in {result.seconds:.1f} s: {result.stats}")
            bundle.applied.append({"method": result.method, "config": result.config, "stats": result.stats})
            steps.append(result)
    return steps


def _training_groups(steps: tuple[BaseConfig, ...]) -> list[list[BaseConfig]]:
    """Steps in order, with consecutive training steps of the same method merged: they share one training
    run (e.g. gradual pruning with different targets), as they would in a user's own loop."""
    groups: list[list[BaseConfig]] = []
    for step in steps:
        last = groups[-1][0] if groups else None
        if step.needs_training and last is not None and last.needs_training and last.method == step.method:
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _notes(bundle: ModelBundle) -> list[str]:
    notes = ["'before' size is the original saved in the same slimkit format (dense float32)."]
    if quant_records(bundle.model):
        notes.append("Quantized weights are stored as packed integers on disk, but this build runs them "
                     "dequantized to float32 in memory: no kernel speedup is claimed.")
    off_grid = off_grid_weights(bundle.model)
    if off_grid:
        worst = max(off_grid, key=lambda name: off_grid[name].relative_rms)
        notes.append(f"{len(off_grid)} quantized weights changed after quantization and were re-quantized with "
                     f"their stored scales when saved, so the saved model differs from the one measured here; "
                     f"worst: {off_grid[worst].describe(worst)}.")
    packed = packed_header(bundle.model)
    if packed and packed["modules"]:
        paths = Counter(spec["compute"] for spec in packed["modules"].values())  # what each layer really runs
        counts = "; ".join(f"{n} × {path}" for path, n in paths.most_common())
        notes.append(f"{sum(paths.values())} layers are packed: {counts}. The float parts run in "
                     f"{packed['float_dtype']}. Measure decode speed with `slimkit bench OUT --compare MODEL`.")
    return notes


def _conversion_notes(bundle: ModelBundle, evaluation: Evaluation) -> list[str]:
    """For a model converted from another framework (Keras / TensorFlow): both run on the evaluation data."""
    if bundle.original is None or bundle.kind != "torch":
        return []
    from slimkit.models.keras_in import compare_with_original, comparison_note

    with status(f"comparing the converted model with {bundle.original.name}"):
        result = compare_with_original(bundle, evaluation.images, evaluation.labels)
    console.print(comparison_note(result))
    return [comparison_note(result)]


def _calibration(bundle: ModelBundle, recipe: Recipe, mix: list[MixPart], samples: int,
                 seq_len: int) -> ForwardLoop | None:
    if not any(step.needs_calibration for step in recipe.steps):
        return None
    return calibration_loop(bundle, mix, samples, seq_len)


def _copy_bundle(bundle: ModelBundle) -> ModelBundle:
    """A copy of ``bundle`` whose model the steps cannot touch (the guard compresses it data-free later)."""
    original = copy.copy(bundle)
    original.model = copy.deepcopy(bundle.model)
    original.applied = list(bundle.applied)
    return original
