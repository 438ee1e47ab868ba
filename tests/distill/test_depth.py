"""Shallower students by keeping some of the teacher's layers: weights carried over, configs updated, the
model generates with its cache and reloads from the slimkit format."""

from __future__ import annotations

import copy

import pytest
import torch

import slimkit
from slimkit.api import apply
from slimkit.distill.depth import DropLayersConfig
from slimkit.models.bundle import ModelBundle
from tests._models import tiny_bert, tiny_llama, token_batches


@pytest.mark.parametrize(("config", "kept"), [(DropLayersConfig(drop_every=3), [0, 1, 3, 4]),
                                              (DropLayersConfig(keep_every=2), [0, 2, 4]),
                                              (DropLayersConfig(keep=(1, 5)), [1, 5])],
                         ids=["drop-every-3", "keep-every-2", "keep-list"])
def test_a_llama_keeps_the_chosen_layers_with_the_teachers_weights_and_reloads(tmp_path, config, kept):
    teacher = tiny_llama(layers=6)
    student = copy.deepcopy(teacher)
    report = apply(student, config)
    assert report.stats["kept"] == kept and student.config.num_hidden_layers == len(kept)
    for new, old in enumerate(kept):
        a, b = student.model.layers[new].state_dict(), teacher.model.layers[old].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert student.model.layers[new].self_attn.layer_idx == new
    ids = token_batches(n=1, seq_len=6)
    generated = student.generate(ids, max_new_tokens=4, do_sample=False)  # the KV cache follows the new indices
    assert generated.shape == (1, 10)
    bundle = ModelBundle(student, "causal-lm", "tiny-llama")
    slimkit.save(bundle, tmp_path / "out")
    reloaded = slimkit.load(str(tmp_path / "out")).model
    assert reloaded.config.num_hidden_layers == len(kept)
    torch.testing.assert_close(reloaded(ids).logits, student(ids).logits)


def test_a_bert_encoder_keeps_every_other_layer_distilbert_style(tmp_path):
    student = tiny_bert(layers=4)
    apply(student, DropLayersConfig(keep_every=2))
    assert len(student.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    slimkit.save(ModelBundle(student, "encoder", "tiny-bert"), tmp_path / "out")
    ids = token_batches(n=2, seq_len=8)
    reloaded = slimkit.load(str(tmp_path / "out")).model
    torch.testing.assert_close(reloaded(ids).last_hidden_state, student(ids).last_hidden_state)


def test_the_layer_choice_is_checked():
    with pytest.raises(ValueError, match="exactly one of keep_every, drop_every, keep"):
        DropLayersConfig(keep_every=2, drop_every=3)
    with pytest.raises(ValueError, match="increasing order"):
        DropLayersConfig(keep=(3, 1))
    with pytest.raises(ValueError, match="has 2 layers"):
        apply(tiny_llama(layers=2), DropLayersConfig(keep=(0, 4)))
