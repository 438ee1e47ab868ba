"""The small training loops: the classifier loop learns and reports progress; LM recovery lowers the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.train.causal_lm import finetune_causal_lm
from slimkit.train.classifier import TrainConfig, train_classifier
from tests._models import tiny_llama, token_batches


def test_classifier_loop_learns_and_reports_progress() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    seen: list[float] = []
    losses = train_classifier(model, x, y, TrainConfig(epochs=5, batch_size=32, lr=3e-2), on_step=seen.append)
    assert losses[-1] < losses[0] / 3
    assert len(seen) == 5 * 8 and seen[-1] == pytest.approx(1.0) and not model.training


def test_causal_lm_recovery_lowers_the_loss_on_its_data() -> None:
    model = tiny_llama()
    windows = token_batches(n=2, seq_len=16)
    losses = finetune_causal_lm(model, windows, steps=20, lr=3e-3)
    assert len(losses) == 20 and losses[-1] < losses[0] - 0.5
    assert all(p.grad is None for p in model.parameters()) and not model.training


class _ByteTokenizer:
    """Token ids = UTF-8 bytes mod 128: enough of a tokenizer for tiny_llama's 128-token vocabulary."""

    def __call__(self, text: str, return_tensors: str, add_special_tokens: bool) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([list(text.encode())]) % 128}


def _recipe_lm_losses(text_file, seed: int) -> list[float]:
    from slimkit.models.bundle import ModelBundle
    from slimkit.train.recipe_training import TrainSection, build_trainer

    bundle = ModelBundle(tiny_llama(), "causal-lm", "tiny", tokenizer=_ByteTokenizer())
    section = TrainSection(samples=8, batch_size=2, lr=1e-3, seed=seed)
    trainer = build_trainer(bundle, section, f"text:{text_file}", seq_len=16)
    return trainer(bundle.model, lambda progress: None)


def test_recipe_train_seed_repeats_a_causal_lm_run_and_different_seeds_differ(tmp_path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: " + "abcdefghij"[i % 10] * (20 + i) for i in range(40)))
    first, again, other = (_recipe_lm_losses(text, seed) for seed in (3, 3, 4))
    assert len(first) == 4  # 8 windows, batches of 2, one epoch
    assert first == again
    assert first != other  # the seed decides which windows each step sees


def test_diverging_causal_lm_run_stops_at_the_first_non_finite_loss() -> None:
    from slimkit.numerics import NonFiniteError

    model = tiny_llama()
    with pytest.raises(NonFiniteError, match=r"training step \d+: the loss is (nan|inf)"):
        finetune_causal_lm(model, token_batches(n=4, seq_len=16), steps=10, lr=1e30)


def test_diverging_classifier_run_stops_at_the_first_non_finite_loss() -> None:
    from slimkit.numerics import NonFiniteError

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(NonFiniteError, match=r"training step \d+: the loss is (nan|inf).*lower learning rate"):
        train_classifier(model, x, (x[:, 0] > 0).long(), TrainConfig(epochs=5, batch_size=16, lr=1e30))
