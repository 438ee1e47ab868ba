"""What ``slimkit analyze`` and ``slimkit compress --target-size / --max-metric-loss`` run, behind the CLI's options.

Kept out of :mod:`slimkit.cli` so the command table stays short: these functions parse the option texts,
check everything that can be checked before the model loads, run the analysis or the search, and print
the result (a sensitivity table, or the before/after report).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.markdown import Markdown
from rich.text import Text

from slimkit.eval.sensitivity import UNTOUCHED, SensitivityConfig, SensitivityTable, analyze_sensitivity
from slimkit.eval.settings import parse_tries
from slimkit.progress import console

#: What a budget search may give a layer group when no ``--try`` is given.
DEFAULT_TRIES = ("bits=2,3,4,8",)


def sensitivity_markdown(table: SensitivityTable) -> str:
    """Two markdown tables over groups × settings: the scores, then the group's bytes on disk."""
    labels = " | ".join(s.label for s in table.settings)
    rule = "|---|---|" + "---|" * len(table.settings)
    scores = [f"Sensitivity: {table.metric_name} (0 = like the original, larger is worse)", "",
              f"| group | params | {labels} |", rule]
    sizes = ["", "Bytes on disk", "", f"| group | as is | {labels} |", rule]
    for g in table.groups:
        scores.append(f"| {g.name} | {g.numel:,} | "
                      + " | ".join(f"{table.scores[g.name][s.key]:.3g}" for s in table.settings) + " |")
        sizes.append(f"| {g.name} | {table.bytes[g.name][UNTOUCHED]:,} | "
                     + " | ".join(f"{table.bytes[g.name][s.key]:,}" for s in table.settings) + " |")
    return "\n".join(scores + sizes)


def run_analyze(model: str, data: str | None, tries: list[str], config: SensitivityConfig, cache_dir: Path | None,
                as_json: bool) -> None:
    """``slimkit analyze``: score every layer group under every tried setting and print the table."""
    from slimkit.eval.evaluate import default_data
    from slimkit.models.loading import load_model
    from slimkit.preflight import check_data_spec, check_model_spec

    settings = parse_tries(tries)  # bad --try texts, data specs and model names before the model loads
    if data is not None:
        check_data_spec(data)
    check_model_spec(model)
    bundle = load_model(model)
    data = data or default_data(bundle)
    table = analyze_sensitivity(bundle, data, settings, config, cache_dir)
    if as_json:
        print(json.dumps({"model": model, "data": data, **table.to_dict()}))
        return
    console.print(Markdown(sensitivity_markdown(table)))
    console.print(Text(f"{table.evaluations} model evaluations this run; cached in {table.cache_file}"),
                  highlight=False, soft_wrap=True)


def run_budget_compress(model: str, out: Path, target_size: str | None, max_metric_loss: str | None,
                        tries: list[str] | None, max_trials: int, calib: list[str] | None, eval_data: str | None,
                        calib_samples: int, overwrite: bool, calib_guard: bool, cache_dir: Path | None,
                        finetune_epochs: int | None = None) -> None:
    """``slimkit compress MODEL --target-size / --max-metric-loss``: search, compress, print the report."""
    from slimkit.search.budget import Budget, parse_loss, parse_size
    from slimkit.search.run import compress_to_budget
    from slimkit.train.recipe_training import TrainSection

    budget = Budget(parse_size(target_size) if target_size else None,
                    parse_loss(max_metric_loss) if max_metric_loss else None, max_trials)
    settings = parse_tries(list(tries or DEFAULT_TRIES))
    report = compress_to_budget(model, budget, settings, out, calib=calib or (), eval_data=eval_data,
                                calib_samples=calib_samples, overwrite=overwrite, calib_guard=calib_guard,
                                cache_dir=cache_dir,
                                finetune=TrainSection(epochs=finetune_epochs) if finetune_epochs else None)
    console.print(Markdown(report.to_markdown()))
    console.print(Text.assemble(("wrote ", "bold green"), f"{out} (model, slimkit.json, recipe.yaml with the chosen "
                                "settings, report.md, report.json, report.png, report.html)"), highlight=False)
