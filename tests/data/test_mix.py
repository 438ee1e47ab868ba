"""Calibration mixes: parsing of SPEC[@WEIGHT] parts and proportional sample counts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimkit.data.mix import MixPart, parse_mix, parse_mix_part, split_counts
from slimkit.data.spec import DataSpec


@pytest.mark.parametrize("text, expected", [
    ("pydoc", MixPart(DataSpec("pydoc"), 1.0)),
    ("pydoc@0.25", MixPart(DataSpec("pydoc"), 0.25)),
    ("text:/data/novel.txt@3", MixPart(DataSpec("text", "/data/novel.txt"), 3.0)),
    ("text:/data/me@home.txt", MixPart(DataSpec("text", "/data/me@home.txt"), 1.0)),
], ids=["plain", "weighted", "path-weighted", "at-sign-in-path"])
def test_parse_mix_part(text, expected):
    assert parse_mix_part(text) == expected


@pytest.mark.parametrize("bad", ["pydoc@0", "pydoc@-1", "pydoc@nan", "pydoc@inf", "wiki@2"])
def test_bad_parts_are_refused(bad):
    with pytest.raises(ValueError):
        parse_mix_part(bad)


def test_text_and_images_do_not_mix():
    with pytest.raises(ValueError, match="mixes text and image"):
        parse_mix(["pydoc", "digits"])


@given(st.integers(0, 10_000), st.lists(st.floats(0.01, 100.0), min_size=1, max_size=6))
def test_split_counts_sum_and_proportion(total, weights):
    counts = split_counts(total, weights)
    assert sum(counts) == total and all(c >= 0 for c in counts)
    for c, w in zip(counts, weights, strict=True):
        assert abs(c - total * w / sum(weights)) < 1.0  # largest remainder is within one sample of exact


def test_split_counts_examples():
    assert split_counts(10, [1, 1]) == [5, 5]
    assert split_counts(10, [3, 1]) == [8, 2]  # 7.5 / 2.5: ties go to the first part
    assert split_counts(7, [1, 1, 1]) == [3, 2, 2]


def test_a_mix_calibrates_on_both_parts_in_proportion(tmp_path):
    from slimkit.data.loops import calibration_loop
    from slimkit.models.bundle import ModelBundle

    (tmp_path / "a.txt").write_text("alpha " * 4000)
    (tmp_path / "b.txt").write_text("beta " * 4000)

    class Tok:  # one token per word: 1 for alpha, 2 for beta
        def __call__(self, text, return_tensors=None, add_special_tokens=False):
            import torch

            return {"input_ids": torch.tensor([[1 if w == "alpha" else 2 for w in text.split()]])}

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, input_ids):
            seen.append(input_ids.clone())

    bundle = ModelBundle(Recorder(), "causal-lm", "recorder", tokenizer=Tok())
    mix = parse_mix([f"text:{tmp_path / 'a.txt'}@3", f"text:{tmp_path / 'b.txt'}"])
    calibration_loop(bundle, mix, samples=8, seq_len=16, batch_size=2)(bundle.model)
    windows = torch.cat(seen)  # (8, 16)
    kinds = [int(w[0]) for w in windows]
    assert sorted(kinds) == [1] * 6 + [2] * 2 and all(len(set(w.tolist())) == 1 for w in windows)
    assert kinds.index(2) < 6  # interleaved, not all of part 1 first
