"""Layer sensitivity analysis: one group perturbed at a time and restored, scores cached and reused, a proxy
whose ranking agrees with the metric, and layer groups (attention / FFN per transformer block)."""

import pytest
import torch
from scipy.stats import spearmanr

from slimkit.config import Targets
from slimkit.data.images import digits
from slimkit.eval.layer_groups import layer_groups
from slimkit.eval.metrics import accuracy
from slimkit.eval.probe import Probe
from slimkit.eval.sensitivity import SensitivityConfig, analyze_sensitivity, model_fingerprint, perturbed
from slimkit.eval.settings import Setting, parse_tries
from slimkit.export.registry import collect_notes
from slimkit.targets import iter_targets
from tests._models import tiny_llama
from tests._trained import trained_lenet_digits

SETTINGS = parse_tries(["bits=2,4", "sparsity=0.5,0.9", "codebook=3"])


def test_every_pair_is_scored_and_the_model_is_left_exactly_as_it_was(tmp_path):
    bundle = trained_lenet_digits()
    before = model_fingerprint(bundle)
    table = analyze_sensitivity(bundle, "digits", SETTINGS, cache_dir=tmp_path)
    assert model_fingerprint(bundle) == before and collect_notes(bundle.model) == {}
    assert [g.name for g in table.groups] == ["1", "3", "5"]
    assert table.evaluations == 1 + 3 * len(SETTINGS)  # the reference, then one per (group, setting)
    for g in table.groups:
        scores = table.scores[g.name]
        assert scores["bits=2"] > scores["bits=4"] > 0 and scores["sparsity=0.9"] > scores["sparsity=0.5"] > 0
        sizes = table.bytes[g.name]
        assert sizes[""] == 4 * g.numel  # float32 as it is
        assert sizes["codebook=3,sparsity=0.9"] < sizes["codebook=3"] < sizes["bits=4"] < sizes[""]


def test_a_second_run_reads_everything_from_the_cache_and_evaluates_nothing(tmp_path, monkeypatch):
    bundle = trained_lenet_digits()
    first = analyze_sensitivity(bundle, "digits", SETTINGS, cache_dir=tmp_path)

    def no_evaluation(self, bundle):
        raise AssertionError("a cached analysis evaluated the model")

    monkeypatch.setattr(Probe, "_outputs", no_evaluation)
    second = analyze_sensitivity(bundle, "digits", SETTINGS[:3], cache_dir=tmp_path)
    assert second.evaluations == 0 and second.cache_file == first.cache_file
    assert second.scores == {g: {k: v for k, v in s.items() if k in second.scores[g]} for g, s in first.scores.items()}


def test_the_cache_key_follows_the_weights_and_the_probe(tmp_path):
    bundle = trained_lenet_digits()
    first = analyze_sensitivity(bundle, "digits", SETTINGS[:1], cache_dir=tmp_path)
    other_probe = analyze_sensitivity(bundle, "digits", SETTINGS[:1], SensitivityConfig(samples=64), tmp_path)
    with torch.no_grad():
        bundle.model.get_parameter("1.weight")[0, 0] += 1.0
    changed = analyze_sensitivity(bundle, "digits", SETTINGS[:1], cache_dir=tmp_path)
    assert len({first.cache_file, other_probe.cache_file, changed.cache_file}) == 3
    assert changed.evaluations > 0


def test_an_interrupted_analysis_resumes_where_it_stopped(tmp_path, monkeypatch):
    bundle = trained_lenet_digits()
    calls = {"n": 0}
    real = Probe.score

    def fails_on_the_fourth(self, b):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, b)

    monkeypatch.setattr(Probe, "score", fails_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        analyze_sensitivity(bundle, "digits", SETTINGS, cache_dir=tmp_path)
    monkeypatch.setattr(Probe, "score", real)
    resumed = analyze_sensitivity(bundle, "digits", SETTINGS, cache_dir=tmp_path)
    assert resumed.evaluations == 1 + 3 * len(SETTINGS) - 3  # the reference again, and only what was missing


def test_the_divergence_ranks_pairs_like_the_test_accuracy_does(tmp_path):
    # measured: Spearman 0.89 over 24 (group, setting) pairs; the probe uses held-out training images only
    bundle = trained_lenet_digits()
    settings = parse_tries(["bits=2,3,4", "sparsity=0.5,0.8,0.9", "codebook=2,3"])
    table = analyze_sensitivity(bundle, "digits", settings, cache_dir=tmp_path)
    x, y = digits("test")
    base = accuracy(bundle.model, x, y)
    divergence, loss = [], []
    for group in table.groups:
        for setting in settings:
            with perturbed(bundle, group, setting):
                loss.append(base - accuracy(bundle.model, x, y))
            divergence.append(table.scores[group.name][setting.key])
    assert spearmanr(divergence, loss).statistic > 0.75


def test_a_transformer_is_grouped_into_attention_and_ffn_per_block():
    model = tiny_llama(layers=2)
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["model.layers.0.attention", "model.layers.0.ffn", "model.layers.1.attention",
                                        "model.layers.1.ffn"]
    assert groups[1].include == ("model.layers.0.mlp.*",)
    assert [len(g.params) for g in groups] == [4, 3, 4, 3]
    every = {t.fqn for t in iter_targets(model, Targets())}
    assert sorted(p for g in groups for p in g.params) == sorted(every)  # each Linear in exactly one group
    for g in groups:  # the globs select exactly the group's parameters
        assert {t.fqn for t in iter_targets(model, g.targets())} == set(g.params)
    assert len(layer_groups(model, per_layer=True)) == 14


def test_a_causal_lm_is_probed_with_kl_on_held_out_windows(tmp_path):
    from tests._models import tiny_llama_bundle

    bundle = tiny_llama_bundle()
    table = analyze_sensitivity(bundle, "pydoc", [Setting(bits=2), Setting(bits=8)],
                                SensitivityConfig(windows=2, seq_len=32), tmp_path)
    assert table.metric_name == "KL divergence"
    for g in table.groups:
        assert table.scores[g.name]["bits=2"] > table.scores[g.name]["bits=8"] >= 0
