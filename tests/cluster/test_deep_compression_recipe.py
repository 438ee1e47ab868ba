"""The shipped Deep Compression recipes run end to end: recipe → compress → load gives the same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import slimkit
from slimkit.cluster.record import HuffmanRecord, get_share_note
from slimkit.models.bundle import ModelBundle
from slimkit.models.zoo import build_architecture
from slimkit.pipeline import compress
from slimkit.recipe import Recipe, load_recipe, recipe_from_dict
from tests._models import lenet_bundle

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _on(recipe: Recipe, data: str, **train: int) -> Recipe:
    """The shipped recipe with its data (and training length) swapped for a quick test."""
    raw = recipe.to_dict()
    raw["train"].update(data=data, **train)
    raw["eval"].update(data=data, latency={"enabled": False})
    return recipe_from_dict(raw, "test")


def _distinct(t: torch.Tensor) -> int:
    return int(t[t != 0].unique().numel())


def test_lenet300_recipe_on_digits_compresses_and_reloads_identically(tmp_path):
    recipe = _on(load_recipe(RECIPES / "deep-compression-lenet300.yaml"), "digits", epochs=12)
    bundle = lenet_bundle(in_features=64)
    report = compress(bundle, recipe, tmp_path / "out")
    assert [s.method for s in report.steps] == ["prune.gradual"] * 3 + ["cluster.kmeans", "cluster.finetune",
                                                                       "cluster.huffman"]
    assert report.after.value > 0.8  # trained from scratch while pruned: 144 steps on 1,294 images (measured 0.85-0.86)
    weights = {name: bundle.model.get_parameter(f"{name}.weight") for name in ("1", "3", "5")}
    density = {name: float((w != 0).float().mean()) for name, w in weights.items()}
    assert density == pytest.approx({"1": 0.08, "3": 0.09, "5": 0.26}, abs=2e-3)
    assert all(_distinct(w) <= 32 for w in weights.values())
    assert report.storage is not None and report.storage["tensors"]["1.weight"]["codec"] == "huffman"
    assert "## Bytes on disk per tensor" in report.to_markdown()
    assert report.before.size_bytes / report.after.size_bytes > 8  # a 64-input LeNet: the biases weigh more
    loaded = slimkit.load(str(tmp_path / "out"))
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), bundle.model(x))
    assert isinstance(get_share_note(loaded.model[1], "weight"), HuffmanRecord)


@pytest.mark.skipif(not FASHION.exists(), reason="apt-get install dataset-fashion-mnist")
def test_lenet5_recipe_gives_conv_layers_8_bits_and_fc_layers_5_bits(tmp_path):
    recipe = _on(load_recipe(RECIPES / "deep-compression-lenet5.yaml"), "fashion-mnist", epochs=1, samples=256)
    torch.manual_seed(0)
    bundle = ModelBundle(build_architecture("lenet-5"), "torch", "lenet-5", arch={"name": "lenet-5", "kwargs": {}})
    report = compress(bundle, recipe, tmp_path / "out")
    conv2, fc1 = bundle.model[3].weight, bundle.model[7].weight
    assert 32 < _distinct(conv2) <= 256 and _distinct(fc1) <= 32
    assert float((fc1 == 0).float().mean()) == pytest.approx(0.92, abs=1e-3)
    assert report.before.size_bytes / report.after.size_bytes > 20
    loaded = slimkit.load(str(tmp_path / "out"))
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in bundle.model.state_dict().items())
