"""``slimkit analyze`` and ``slimkit compress --max-metric-loss / --target-size`` as a user runs them."""

import json

import pytest
from typer.testing import CliRunner

from slimkit.cli import app
from slimkit.export.slimkit_format import save
from slimkit.recipe import load_recipe
from tests._trained import trained_lenet_digits

runner = CliRunner()


@pytest.fixture
def lenet_dir(tmp_path):
    return save(trained_lenet_digits(), tmp_path / "lenet")


def test_analyze_prints_the_table_and_a_rerun_evaluates_nothing(tmp_path, lenet_dir):
    args = ["analyze", str(lenet_dir), "--data", "digits", "--try", "bits=2,8", "--try", "sparsity=0.5",
            "--cache-dir", str(tmp_path / "cache")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "int2" in first.output and "50%" in first.output and "10 model evaluations this run" in first.output
    second = runner.invoke(app, [*args, "--json"])
    assert second.exit_code == 0, second.output
    payload = json.loads(second.stdout.strip().splitlines()[-1])
    assert payload["evaluations"] == 0 and payload["settings"] == ["bits=2", "bits=8", "sparsity=0.5"]
    assert set(payload["scores"]) == {"1", "3", "5"}


def test_compress_to_a_loss_budget_writes_a_rerunnable_recipe(tmp_path, lenet_dir):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", str(lenet_dir), "--out", str(out), "--eval", "digits",
                                 "--max-metric-loss", "2%", "--try", "bits=4,8", "--max-trials", "3",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert len(report["search"]["trials"]) <= 3
    assert report["after"]["size_bytes"] < report["before"]["size_bytes"] / 3
    assert {s.method for s in load_recipe(out / "recipe.yaml").steps} == {"quant.rtn"}
    rerun = runner.invoke(app, ["compress", str(lenet_dir), "--out", str(tmp_path / "again"), "--eval", "digits",
                                "--recipe", str(out / "recipe.yaml")])
    assert rerun.exit_code == 0, rerun.output
    assert (out / "slimkit.safetensors").read_bytes() == (tmp_path / "again" / "slimkit.safetensors").read_bytes()


@pytest.mark.parametrize(("extra", "fragment"), [
    ([], "give either --recipe or a budget"),
    (["--recipe", "r.yaml", "--target-size", "1MB"], "give either --recipe or a budget"),
    (["--target-size", "forty"], "--target-size 'forty'"),
    (["--max-metric-loss", "1%", "--try", "bits=12"], "outside 2..8"),
    (["--recipe", "r.yaml", "--finetune-epochs", "2"], "--finetune-epochs shape a budget search"),
], ids=["neither", "both", "bad-size", "bad-try", "finetune-with-recipe"])
def test_budget_mistakes_exit_2_naming_the_option(tmp_path, lenet_dir, extra, fragment):
    result = runner.invoke(app, ["compress", str(lenet_dir), "--out", str(tmp_path / "out"), *extra])
    assert result.exit_code == 2 and fragment in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()
