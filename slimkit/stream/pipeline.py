"""``slimkit compress DIR --recipe R --out OUT --stream``: the streamed twin of :func:`slimkit.pipeline.compress`.

Everything that can be refused is refused before a weight is read: the model (:func:`open_source`), the
recipe and its targets (:mod:`slimkit.stream.support`), the output location and the memory it needs
(:mod:`slimkit.memory`, checked by the caller). Then the streamed run (:mod:`slimkit.stream.runner`)
compresses one layer at a time into ``OUT.stream`` (kept after a kill: rerunning the same command continues
from the last finished layer), the output directory is written atomically from it
(:mod:`slimkit.stream.output`) with the usual report, and the work directory is deleted. The report's
perplexities come from the same streamed pass (the original and the compressed layers, one window at a
time); latency needs the whole model and is not measured, nor is the calibration guard run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from slimkit.atomic import atomic_directory, directory_bytes
from slimkit.data.loops import calibration_loop
from slimkit.data.mix import parse_mix
from slimkit.eval.evaluate import EvalConfig, Evaluation, Measurement
from slimkit.eval.metrics import non_finite_warning
from slimkit.export.slimkit_format import check_output
from slimkit.memory import MemoryPlan, memory_note
from slimkit.models.bundle import ModelBundle
from slimkit.pipeline import write_reports
from slimkit.progress import console, status
from slimkit.recipe import Recipe
from slimkit.report.report import Report
from slimkit.stream.checkpoint import LayerCheckpoints, default_work_dir
from slimkit.stream.output import storage_from_headers, write_output
from slimkit.stream.runner import StreamedRun, StreamResult, layers_spec
from slimkit.stream.skeleton import build_skeleton, layer_prefixes
from slimkit.stream.support import StreamSource, check_recipe, check_targets, open_source


def _tokenizer(source: StreamSource) -> object:
    from transformers import AutoTokenizer

    if not any((source.directory / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ValueError(f"{source.directory}: no tokenizer files; a streamed run calibrates and evaluates on text, "
                         "so save the tokenizer into the directory too (tokenizer.save_pretrained(DIR))")
    return AutoTokenizer.from_pretrained(source.directory, local_files_only=True)


def _fingerprint(source: StreamSource, recipe: Recipe, inputs: str) -> str:
    """What decides the result: the model's files, the steps, the captured calibration and evaluation inputs."""
    parts = [source.index.fingerprint(), [s.describe() for s in recipe.steps], inputs]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _measurement(value: float, result: StreamResult, zeros: str, size: int) -> Measurement:
    warning = non_finite_warning("perplexity", value)
    return Measurement("perplexity", value, False, result.params, result.zeros[zeros] / max(result.zeros["total"], 1),
                       size, {}, [warning] if warning else [])


def compress_streamed(spec: str, recipe: Recipe, out: Path, *, calib: Sequence[str] = (), eval_data: str | None = None,
                      calib_samples: int = 32, overwrite: bool = False, plan: MemoryPlan | None = None) -> Report:
    """Compress the Hugging Face causal LM directory ``spec`` one decoder layer at a time (see module docstring).

    Args:
        spec: the model directory.
        recipe: the validated recipe (streamable steps only).
        out: the output directory, written atomically.
        calib: calibration data specs (a mix, as for ``compress``); defaults to the evaluation data.
        eval_data: evaluation data spec; overrides the recipe's ``eval.data``.
        calib_samples: calibration windows of ``eval.seq_len`` tokens.
        overwrite: replace an existing slimkit output.
        plan: the memory plan that chose streaming (its estimate goes into the report; ``plan.spill`` keeps
            calibration and evaluation activations on disk, one batch in memory at a time).
    """
    out = Path(out)
    source = open_source(spec)
    check_recipe(recipe, "the recipe")
    skeleton = build_skeleton(source.config)
    prefixes = layer_prefixes(skeleton)
    check_targets(recipe.steps, skeleton, prefixes, "the recipe")
    bundle = ModelBundle(skeleton, "causal-lm", spec, _tokenizer(source))
    eval_cfg: EvalConfig = recipe.eval.model_copy(update={"data": eval_data}) if eval_data else recipe.eval
    windows = Evaluation(bundle, eval_cfg).windows
    loop = None
    if any(s.needs_calibration for s in recipe.steps):
        mix = parse_mix(list(calib) or [eval_cfg.data or "pydoc"])
        loop = calibration_loop(bundle, mix, calib_samples, eval_cfg.seq_len)
    work = default_work_dir(out)
    LayerCheckpoints.check_directory(work)
    run = StreamedRun(skeleton, source.index, recipe.steps, work, spill=bool(plan and plan.spill))
    with status("capturing the inputs of the first decoder layer"):
        inputs = run.capture(loop, windows)
    checkpoints = LayerCheckpoints(work, _fingerprint(source, recipe, inputs))
    result = run.run(checkpoints, " → ".join(s.method for s in recipe.steps))
    for step in result.steps:
        console.print(f"applied {step.method} in {step.seconds:.1f} s: {step.stats}")
        bundle.applied.append({"method": step.method, "config": step.config, "stats": step.stats})
    check_output(out, overwrite)  # again: the directory may have changed during the run
    with atomic_directory(out, overwrite=overwrite) as tmp:
        with status(f"writing {out}"):
            write_output(tmp, bundle, result)
        size_before = directory_bytes(source.directory)
        report = Report(spec, result.steps, _measurement(result.perplexity_before, result, "zeros_before", size_before),
                        _measurement(result.perplexity_after, result, "zeros_after", directory_bytes(tmp)), str(out),
                        _notes(result, source, plan), storage=storage_from_headers(tmp))
        report.notes.append(memory_note(plan))
        write_reports(report, recipe, tmp)
    checkpoints.remove()
    return report


def _notes(result: StreamResult, source: StreamSource, plan: MemoryPlan | None) -> list[str]:
    spec = layers_spec(result)
    resumed = (f" Resumed after a stop: layers 0–{result.resumed_from - 1} came from the checkpoint."
               if result.resumed_from else "")
    return [f"Streamed: {spec['layers']} decoder layers read one at a time from {source.directory} "
            f"(safetensors, {source.index.total_bytes() / 1e9:.2f} GB), compressed and written out; the whole model "
            f"was never in memory.{resumed}",
            f"'before' and 'after' perplexities come from the same streamed pass, one window at a time "
            f"({spec['eval_seconds']} s); latency is not measured and the calibration guard is not run in a "
            "streamed run (both need the whole model).",
            "'before' size is the source directory's bytes (its own format, not the slimkit format).",
            *([f"Streaming was chosen because {plan.reason}."] if plan and plan.reason else []),
            *(["Calibration and evaluation activations were kept on disk, one batch in memory at a time."]
              if plan and plan.spill else [])]

