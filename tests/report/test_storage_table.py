"""report.md's bytes-on-disk table: per tensor for a small model, one row per codec for an LLM's hundreds."""

from __future__ import annotations

from slimkit.eval.evaluate import Measurement
from slimkit.method import StepReport
from slimkit.report.report import MAX_TENSOR_ROWS, Report


def _report(n_coded: int) -> Report:
    m = Measurement(metric="perplexity", value=10.0, higher_is_better=False, size_bytes=1000, params=10, sparsity=0.0)
    tensors = {f"layers.{i}.weight": {"codec": "int", "shape": [4, 4], "values": 8, "codebook": 4}
               for i in range(n_coded)}
    tensors["embed.weight"] = {"codec": "dense", "shape": [8, 4], "values": 128}
    storage = {"total_bytes": 12 * n_coded + 128 + 50, "overhead_bytes": 50, "tensors": tensors}
    return Report("m", [StepReport("quant.rtn", {})], m, m, storage=storage)


def test_a_small_model_lists_every_coded_tensor():
    md = _report(3).to_markdown()
    assert md.count("| int | [4, 4] | 8 |  | 4 |  | 12 |") == 3 and "| layers.2.weight |" in md
    assert "| other tensors (1, dense) | | | 128 |" in md and f"**{12 * 3 + 178}**" in md


def test_many_coded_tensors_are_summed_per_codec_in_markdown_but_kept_in_json():
    n = MAX_TENSOR_ROWS + 1
    report = _report(n)
    md = report.to_markdown()
    assert f"| {n} tensors | int |  | {8 * n} | 0 | {4 * n} | 0 | {12 * n} |" in md
    assert "layers.0.weight" not in md and "layers.0.weight" in report.to_json()
