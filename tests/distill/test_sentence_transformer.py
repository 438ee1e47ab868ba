"""A sentence-transformers encoder trained from a recipe: MiniLM-L6 → a 3-layer student (every other layer)
distilled towards the original's embeddings moves closer to them than the same student untrained."""

from __future__ import annotations

import pytest

import slimkit
from slimkit.pipeline import compress
from slimkit.recipe import recipe_from_dict


@pytest.mark.real_model
def test_a_three_layer_minilm_student_learns_the_teachers_embeddings(tmp_path):
    eval_section = {"data": "pydoc", "samples": 64, "latency": {"enabled": False}}
    drop = {"method": "distill.drop_layers", "keep_every": 2}
    untrained = compress("minilm-l6", recipe_from_dict({"version": 1, "steps": [drop], "eval": eval_section}),
                         tmp_path / "untrained")
    recipe = recipe_from_dict({"version": 1, "steps": [drop, {"method": "train.finetune"}],
                               "train": {"samples": 128, "batch_size": 16, "lr": 1e-4, "distill": {}},
                               "eval": eval_section}, "minilm.yaml")
    report = compress("minilm-l6", recipe, tmp_path / "out")
    assert report.steps[0].stats["layers_after"] == 3
    assert report.after.value > untrained.after.value  # mean cosine to the original's embeddings
    reloaded = slimkit.load(str(tmp_path / "out"))
    assert len(reloaded.model[0].auto_model.encoder.layer) == 3
    assert reloaded.model.encode(["a sentence"]).shape == (1, 384)
