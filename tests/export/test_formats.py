"""The export-format registry: options checked, missing extras named, files published atomically, a file
that fails its runtime check never written, and the recipe's ``export:`` section / ``slimkit export``.

A test-only format (``npz-roundtrip``) stands in for the real ones: it writes the state dict with numpy,
reads it back with numpy into a fresh model and compares outputs, as the real formats do with their readers.
"""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from slimkit.cli import app
from slimkit.config import FrozenModel
from slimkit.export import formats
from slimkit.export.formats import ExportFormat, ExportResult, RuntimeCheck, export_model, register_export_format
from slimkit.export.slimkit_format import save
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.recipe import RecipeError, recipe_from_dict
from tests._models import lenet_bundle

runner = CliRunner()


class NpzOptions(FrozenModel):
    scale: float = 1.0  # != 1 corrupts the written weights, so the check must fail


def _write_npz(bundle: ModelBundle, path, options: NpzOptions) -> ExportResult:
    state = {k: v.detach().numpy() * (options.scale if v.is_floating_point() else 1)
             for k, v in bundle.model.state_dict().items()}
    with open(path, "wb") as f:
        np.savez(f, **state)
    loaded = np.load(path)
    copy_model = build_architecture(bundle.arch["name"], bundle.arch["kwargs"]).eval()
    copy_model.load_state_dict({k: torch.from_numpy(loaded[k]) for k in loaded.files})
    x = torch.randn(8, bundle.arch["kwargs"]["in_features"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (copy_model(x) - bundle.model(x)).abs()
    check = RuntimeCheck("numpy", float(diff.max()), float(diff.mean()), tolerance=1e-6)
    return ExportResult("npz-roundtrip", path, checks=[check], notes=["written by a test"])


@pytest.fixture
def npz_format():
    fmt = register_export_format(ExportFormat("npz-roundtrip", ".npz", _write_npz, NpzOptions,
                                              requires=(("numpy", "numpy"),)))
    yield fmt
    formats._FORMATS.pop(fmt.name)


def test_export_writes_a_checked_file(tmp_path, npz_format):
    result = export_model(lenet_bundle(in_features=64), "npz-roundtrip", tmp_path / "m.npz")
    assert result.path == tmp_path / "m.npz" and result.bytes == (tmp_path / "m.npz").stat().st_size > 0
    assert result.checks[0].passed and result.checks[0].max_abs_diff == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_a_file_that_fails_its_check_is_never_written_and_nothing_is_replaced(tmp_path, npz_format):
    out = tmp_path / "m.npz"
    out.write_bytes(b"previous export")
    with pytest.raises(ValueError, match=r"m.npz: the npz-roundtrip export does not match the PyTorch model: "
                                         r"numpy max \|diff\|"):
        export_model(lenet_bundle(in_features=64), "npz-roundtrip", out, {"scale": 1.5}, overwrite=True)
    assert out.read_bytes() == b"previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_existing_files_need_overwrite_and_directories_are_never_replaced(tmp_path, npz_format):
    out = tmp_path / "m.npz"
    out.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        export_model(lenet_bundle(in_features=64), "npz-roundtrip", out)
    assert out.read_bytes() == b"mine"
    export_model(lenet_bundle(in_features=64), "npz-roundtrip", out, overwrite=True)
    assert out.read_bytes()[:2] == b"PK"
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(FileExistsError, match="not a regular file"):
        export_model(lenet_bundle(in_features=64), "npz-roundtrip", tmp_path / "d.npz", overwrite=True)


def test_bad_options_unknown_formats_and_missing_extras_are_named(tmp_path, npz_format, monkeypatch):
    bundle = lenet_bundle(in_features=64)
    with pytest.raises(ValueError, match=r"export format 'npz-roundtrip' options: bitz: Extra inputs"):
        export_model(bundle, "npz-roundtrip", tmp_path / "m.npz", {"bitz": 4})
    with pytest.raises(ValueError, match=r"unknown export format 'onnnx'; known formats: .*npz-roundtrip"):
        export_model(bundle, "onnnx", tmp_path / "m.onnx")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"needs numpy: pip install 'numpy'"):
        export_model(bundle, "npz-roundtrip", tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_registering_a_name_twice_is_refused(npz_format):
    with pytest.raises(ValueError, match="already registered"):
        register_export_format(npz_format)
    with pytest.raises(ValueError, match="already registered"):
        register_export_format(ExportFormat("slimkit", "", _write_npz))


def test_recipe_export_section_validates_format_and_options(npz_format):
    steps = [{"method": "quant.rtn", "bits": 8}]
    recipe = recipe_from_dict({"steps": steps, "export": {"format": "npz-roundtrip", "options": {"scale": 1.0}}})
    assert recipe.export.format == "npz-roundtrip"
    with pytest.raises(RecipeError, match=r"section 'export'.*unknown export format 'onx'"):
        recipe_from_dict({"steps": steps, "export": {"format": "onx"}})
    with pytest.raises(RecipeError, match=r"section 'export'.*options: bitz"):
        recipe_from_dict({"steps": steps, "export": {"format": "npz-roundtrip", "options": {"bitz": 4}}})
    with pytest.raises(RecipeError, match="slimkit format takes no options"):
        recipe_from_dict({"steps": steps, "export": {"options": {"scale": 2}}})


def test_compress_writes_the_export_beside_the_model_and_reports_it(tmp_path, npz_format):
    lenet = save(lenet_bundle(in_features=64), tmp_path / "lenet")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - method: prune.magnitude\n    sparsity: 0.5\n"
                      "eval:\n  latency:\n    enabled: false\nexport:\n  format: npz-roundtrip\n")
    out = tmp_path / "out"
    args = ["compress", str(lenet), "--recipe", str(recipe), "--out", str(out), "--eval", "digits"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "npz-roundtrip checked in numpy" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["export"]["path"] == "model.npz" and report["export"]["bytes"] == (out / "model.npz").stat().st_size
    assert report["export"]["checks"][0]["passed"]
    assert report["after"]["size_bytes"] == report["storage"]["total_bytes"]  # the export is not the model's bytes
    assert "## Export: npz-roundtrip" in (out / "report.md").read_text()
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0  # the export is one of slimkit's files


def test_cli_export_and_list_formats(tmp_path, npz_format):
    lenet = save(lenet_bundle(in_features=64), tmp_path / "lenet")
    out = tmp_path / "m.npz"
    result = runner.invoke(app, ["export", str(lenet), "--format", "npz-roundtrip", "--out", str(out),
                                 "--option", "scale=1.0"])
    assert result.exit_code == 0, result.output
    assert "checked in numpy: max |diff| 0" in result.output and out.exists()
    again = runner.invoke(app, ["export", str(lenet), "--format", "npz-roundtrip", "--out", str(out)])
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    bad = runner.invoke(app, ["export", str(lenet), "--format", "npz-roundtrip", "--out", str(tmp_path / "x.npz"),
                              "--option", "scale"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output and not (tmp_path / "x.npz").exists()
    listed = runner.invoke(app, ["list-formats"])
    assert listed.exit_code == 0 and "npz-roundtrip" in listed.output and "scale=1.0" in listed.output
