"""How each kind of model is run on a training batch, what its own loss is, and how its outputs distil.

* torch classifiers: a batch is ``(x, y)``; logits (B, C); own loss cross-entropy against ``y``.
* causal LMs: a batch is token ids (B, T) (labels = the ids, as for the LM loss); logits (B, T, V); own
  loss next-token cross-entropy; distillation is token-level over the vocabulary on the same positions.
* sentence-transformers: a batch is the tokenizer's features for a list of sentences; the output is the
  sentence embedding (B, D). They have no labels, so they train only against a teacher (cosine loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.distill.losses import causal_lm_ce, causal_lm_kd, hard_ce, kd_kl, teacher_argmax


@dataclass
class Outputs:
    """What one forward pass gives the losses: logits or embeddings, and attention maps when asked."""

    logits: Tensor | None = None  # (B, C) or (B, T, V)
    embeddings: Tensor | None = None  # (B, D)
    attentions: tuple[Tensor, ...] | None = None  # per layer (B, H, T, T)


class ClassifierTask:
    """A torch classifier on ``(x, y)`` batches."""

    kind = "torch"

    def run(self, model: nn.Module, batch: Any, attentions: bool = False) -> Outputs:
        if attentions:
            raise ValueError("attention transfer needs transformers; this torch classifier has no attention maps")
        return Outputs(logits=model(batch[0]))

    def own_loss(self, out: Outputs, batch: Any) -> Tensor:
        assert out.logits is not None
        return F.cross_entropy(out.logits, batch[1])

    def soft_loss(self, s: Outputs, t: Outputs, batch: Any, temperature: float) -> Tensor:
        assert s.logits is not None and t.logits is not None
        return kd_kl(s.logits, t.logits, temperature)

    def hard_loss(self, s: Outputs, batch: Any, t: Outputs | None) -> Tensor:
        assert s.logits is not None
        return hard_ce(s.logits, batch[1] if t is None or t.logits is None else teacher_argmax(t.logits))

    def token_mask(self, batch: Any) -> Tensor | None:
        return None

    def batch_size(self, batch: Any) -> int:
        return len(batch[1])


class CausalLMTask:
    """A transformers causal LM on token windows (B, T)."""

    kind = "causal-lm"

    def run(self, model: nn.Module, batch: Any, attentions: bool = False) -> Outputs:
        out = model(input_ids=batch, output_attentions=attentions, use_cache=False)
        return Outputs(logits=out.logits, attentions=out.attentions if attentions else None)

    def own_loss(self, out: Outputs, batch: Any) -> Tensor:
        assert out.logits is not None
        return causal_lm_ce(out.logits, batch)

    def soft_loss(self, s: Outputs, t: Outputs, batch: Any, temperature: float) -> Tensor:
        assert s.logits is not None and t.logits is not None
        return causal_lm_kd(s.logits, t.logits, batch, temperature)

    def hard_loss(self, s: Outputs, batch: Any, t: Outputs | None) -> Tensor:
        assert s.logits is not None
        return causal_lm_ce(s.logits, batch, None if t is None else t.logits)

    def token_mask(self, batch: Any) -> Tensor | None:
        return None

    def batch_size(self, batch: Any) -> int:
        return int(batch.shape[0])


class EmbeddingTask:
    """A sentence-transformers pipeline on tokenised sentences; outputs sentence embeddings."""

    kind = "sentence-transformer"

    def run(self, model: nn.Module, batch: Any, attentions: bool = False) -> Outputs:
        if attentions:
            raise ValueError("attention transfer is not available for sentence-transformers pipelines; match "
                             "hidden states with train.distill.features instead")
        return Outputs(embeddings=model(dict(batch))["sentence_embedding"])

    def own_loss(self, out: Outputs, batch: Any) -> Tensor:
        raise ValueError("a sentence-transformer has no labels to train on; add a train.distill block so it "
                         "learns to reproduce a teacher's embeddings (by default the original model's)")

    def soft_loss(self, s: Outputs, t: Outputs, batch: Any, temperature: float) -> Tensor:
        raise AssertionError("embedding models distil by cosine, not by softened logits")

    def hard_loss(self, s: Outputs, batch: Any, t: Outputs | None) -> Tensor:
        raise AssertionError("embedding models have no hard targets")

    def token_mask(self, batch: Any) -> Tensor | None:
        return batch["attention_mask"].bool()

    def batch_size(self, batch: Any) -> int:
        return int(batch["input_ids"].shape[0])


Task = ClassifierTask | CausalLMTask | EmbeddingTask


def task_for(kind: str) -> Task:
    """The task of a model kind; the error lists the kinds that train."""
    tasks: dict[str, Task] = {"torch": ClassifierTask(), "causal-lm": CausalLMTask(),
                              "sentence-transformer": EmbeddingTask()}
    if kind not in tasks:
        raise ValueError(f"a recipe's train section can train {', '.join(tasks)} models, not a {kind} model; "
                         "train it through the API (slimkit.prepare) instead")
    return tasks[kind]
