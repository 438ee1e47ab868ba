"""The benchmark training loop distils from a teacher when given one."""

from __future__ import annotations

import torch
from torch import nn

from slimkit.train.classifier import Teacher, TrainConfig, train_classifier


def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x).argmax(-1) == b(x).argmax(-1)).float().mean())


def test_a_student_follows_its_teacher_not_the_random_labels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2048, 16)
    y = torch.randint(0, 4, (2048,))  # labels carry no signal: only the teacher can be learned
    teacher = nn.Linear(16, 4)
    config = TrainConfig(epochs=10, batch_size=128, lr=1e-2, seed=0)
    distilled, labels_only = nn.Linear(16, 4), nn.Linear(16, 4)
    labels_only.load_state_dict(distilled.state_dict())
    train_classifier(distilled, x, y, config, teacher=Teacher(teacher, temperature=2.0, alpha=1.0))
    train_classifier(labels_only, x, y, config)
    held_out = torch.randn(512, 16)
    assert agreement(distilled, teacher, held_out) > 0.9
    assert agreement(labels_only, teacher, held_out) < 0.5
    assert not any(p.grad is not None for p in teacher.parameters())  # the teacher stays frozen
