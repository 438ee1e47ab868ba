"""Training objectives as modules: the model's own loss, or distillation from a frozen teacher.

An objective is an ``nn.Module`` whose ``forward(batch)`` returns the scalar loss. The student is its
submodule (so are the learned feature projections), which lets one optimizer, one checkpoint and one
``DistributedDataParallel`` wrapper cover everything that learns. The teacher is deliberately *not* a
submodule: it is frozen (``requires_grad=False``), kept in eval mode whatever mode the objective is
put in, run under ``no_grad``, and never seen by the optimizer, the checkpoint or DDP.

Feature taps are forward hooks owned by a :class:`~slimkit.hooks.HookSet` and removed by ``close()``;
they only record a module's output (they never change it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from slimkit.distill.losses import attention_kl, cosine_loss, feature_mse, learned_projection, mix
from slimkit.distill.section import DistillSection
from slimkit.distill.tasks import Outputs, Task
from slimkit.hooks import HookSet


class OwnLossObjective(nn.Module):
    """The model's own loss (cross-entropy against labels / next tokens)."""

    def __init__(self, student: nn.Module, task: Task) -> None:
        super().__init__()
        self.student = student
        self.task = task

    def forward(self, batch: Any) -> Tensor:
        return self.task.own_loss(self.task.run(self.student, batch), batch)

    def close(self) -> None:
        """Nothing is attached to the model."""


def _first_tensor(output: Any) -> Tensor:
    """A module's output tensor: transformer layers return tuples whose first element is the hidden state."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _module(model: nn.Module, name: str, which: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        layers = [n for n, _ in model.named_modules() if n][:8]
        raise ValueError(f"train.distill.features: the {which} has no module {name!r} (its modules start: "
                         f"{', '.join(layers)}, ...)") from None


def _eager_attention(model: nn.Module) -> str | None:
    """Switch a transformers model to eager attention (the only kind that returns its maps); old setting."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        raise ValueError("train.distill.attention needs a transformers model that can return attention maps")
    previous = model.config._attn_implementation  # type: ignore[union-attr]
    setter("eager")
    return str(previous)


class DistillObjective(nn.Module):
    """``alpha · T²·KL + (1 − alpha) · hard`` (or cosine for embeddings) plus feature and attention terms."""

    def __init__(self, student: nn.Module, teacher: nn.Module, task: Task, section: DistillSection) -> None:
        super().__init__()
        self.student = student
        self.task = task
        self.section = section
        self._teacher = (teacher.eval().requires_grad_(False),)  # a tuple: not a submodule (see module docstring)
        self.projections = nn.ModuleDict()
        self.hooks = HookSet()
        self._taps: dict[str, Tensor] = {}
        for i, pair in enumerate(section.features):
            self.hooks.forward_hook(_module(student, pair.student, "student"), self._recorder(f"s{i}"))
            self.hooks.forward_hook(_module(teacher, pair.teacher, "teacher"), self._recorder(f"t{i}"))
        self._attention_before = [_eager_attention(m) for m in (student, teacher)] if section.attention else []

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def _recorder(self, key: str) -> Any:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            self._taps[key] = _first_tensor(output)

        return record

    def add_projections(self, batch: Any) -> None:
        """Run ``batch`` once to learn each feature pair's widths; add a learned projection where they differ.

        Call before creating the optimizer, so the projections are trained with the student.
        """
        if not self.section.features:
            return
        with torch.no_grad():
            self.task.run(self.student, batch)
            self.task.run(self.teacher, batch)
        for i in range(len(self.section.features)):
            projection = learned_projection(self._taps[f"s{i}"].shape[-1], self._taps[f"t{i}"].shape[-1])
            if projection is not None:
                self.projections[str(i)] = projection.to(self._taps[f"s{i}"].dtype)
        self._taps.clear()

    def forward(self, batch: Any) -> Tensor:
        with_attention = bool(self.section.attention)
        with torch.no_grad():
            self.teacher.eval()
            t = self.task.run(self.teacher, batch, with_attention)
        s = self.task.run(self.student, batch, with_attention)
        loss = self._output_loss(s, t, batch)
        mask = self.task.token_mask(batch)
        for i, pair in enumerate(self.section.features):
            s_feat, t_feat = self._taps[f"s{i}"], self._taps[f"t{i}"]
            feat_mask = mask if mask is not None and s_feat.dim() == mask.dim() + 1 else None
            loss = loss + pair.weight * feature_mse(s_feat, t_feat, self.projections[str(i)]
                                                    if str(i) in self.projections else None, feat_mask)
        for attn in self.section.attention:
            loss = loss + attn.weight * self._attention_loss(s, t, attn.student, attn.teacher, mask)
        self._taps.clear()
        return loss

    def _output_loss(self, s: Outputs, t: Outputs, batch: Any) -> Tensor:
        if s.embeddings is not None:
            assert t.embeddings is not None
            return cosine_loss(s.embeddings, t.embeddings)
        sec = self.section
        soft = self.task.soft_loss(s, t, batch, sec.temperature)
        if sec.alpha == 1.0:
            return soft
        hard = self.task.hard_loss(s, batch, t if sec.hard_targets == "teacher" else None)
        return mix(soft, hard, sec.alpha)

    @staticmethod
    def _attention_loss(s: Outputs, t: Outputs, s_layer: int, t_layer: int, mask: Tensor | None) -> Tensor:
        assert s.attentions is not None and t.attentions is not None
        for which, maps, index in (("student", s.attentions, s_layer), ("teacher", t.attentions, t_layer)):
            if index >= len(maps):
                raise ValueError(f"train.distill.attention: the {which} has {len(maps)} layers, no layer {index}")
        return attention_kl(s.attentions[s_layer], t.attentions[t_layer], mask)

    def close(self) -> None:
        """Remove the feature taps and give both models back their attention implementation."""
        self.hooks.remove_all()
        for model, previous in zip((self.student, self.teacher), self._attention_before, strict=False):
            model.set_attn_implementation(previous)  # type: ignore[operator]
