"""Distillation losses as pure tensor functions: soft and hard targets, features, embeddings, attention.

* Soft targets (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"):
  ``T² · KL(softmax(z_t / T) ‖ softmax(z_s / T))``. The gradient of the softened loss scales as
  ``1 / T²``, so multiplying by ``T²`` keeps the soft term's weight comparable to the hard term's
  whatever the temperature (their section 2).
* Hard targets: cross-entropy against the ground-truth labels or the teacher's argmax.
* The mix ``alpha · soft + (1 − alpha) · hard``.
* Feature / hidden-state MSE (FitNets, Romero et al. 2015), through a learned linear projection of
  the student's features when its width differs from the teacher's.
* Cosine loss ``1 − cos(e_s, e_t)`` for embedding models (DistilBERT's cosine embedding loss).
* Attention-map transfer: KL between the teacher's and the student's self-attention distributions
  (MiniLM, Wang et al. 2020), heads averaged when their counts differ.
* Causal LMs distil token by token over the vocabulary, on the positions the LM loss uses: logits at
  ``t`` predict token ``t + 1``, and labels of ``-100`` (padding) are left out.

Every loss is a mean over the positions it counts, so its scale does not depend on batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100  # the label HF and torch use for positions the loss skips


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` (N,) over entries where ``mask`` (N,) is true (all when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """``T² · KL(p_t ‖ p_s)`` on temperature-softened distributions, averaged over positions.

    Args:
        student_logits: (..., C) raw scores.
        teacher_logits: (..., C), same shape; no gradient flows into it.
        temperature: ``T > 0``; ``T = 1`` is plain KL on the model's own distributions.
        mask: (...) boolean, positions to count (all when None).

    Returns:
        A scalar.
    """
    if temperature <= 0:
        raise ValueError(f"the distillation temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; a student must predict the teacher's classes")
    c = student_logits.shape[-1]
    log_q = F.log_softmax(student_logits.reshape(-1, c) / temperature, dim=-1)  # (N, C)
    log_p = F.log_softmax(teacher_logits.detach().reshape(-1, c).to(log_q.dtype) / temperature, dim=-1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)  # (N,)
    flat_mask = None if mask is None else mask.reshape(-1)
    return temperature**2 * _masked_mean(per_position, flat_mask)


def teacher_argmax(teacher_logits: Tensor) -> Tensor:
    """The teacher's predicted classes (...,), the hard targets when ground truth is not used."""
    return teacher_logits.detach().argmax(-1)


def hard_ce(student_logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of ``student_logits`` (..., C) against class ``targets`` (...); ``-100`` is skipped."""
    c = student_logits.shape[-1]
    return F.cross_entropy(student_logits.reshape(-1, c), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def mix(soft: Tensor, hard: Tensor, alpha: float) -> Tensor:
    """``alpha · soft + (1 − alpha) · hard``; ``alpha = 1`` is pure distillation, ``0`` pure hard targets."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return alpha * soft + (1.0 - alpha) * hard


def causal_lm_positions(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Shift for next-token prediction: logits (B, T-1, V), targets (B, T-1) and their mask (B, T-1).

    Logits at position ``t`` predict label ``t + 1`` (as the LM loss of transformers computes it);
    positions whose target is ``-100`` are masked out.
    """
    targets = labels[:, 1:]
    return logits[:, :-1], targets, targets != IGNORE_INDEX


def causal_lm_kd(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Token-level ``T² · KL`` over the vocabulary on the positions the LM loss counts.

    Args:
        student_logits: (B, T, V).
        teacher_logits: (B, T, V).
        labels: (B, T) token ids with ``-100`` where nothing is predicted (padding).
        temperature: softening temperature.
    """
    s, _, mask = causal_lm_positions(student_logits, labels)
    t = teacher_logits[:, :-1]
    return kd_kl(s, t, temperature, mask)


def causal_lm_ce(student_logits: Tensor, labels: Tensor, teacher_logits: Tensor | None = None) -> Tensor:
    """Next-token cross-entropy against ``labels`` (B, T), or against the teacher's argmax when given."""
    s, targets, mask = causal_lm_positions(student_logits, labels)
    if teacher_logits is not None:
        targets = torch.where(mask, teacher_argmax(teacher_logits[:, :-1]), IGNORE_INDEX)
    return hard_ce(s, targets)


def feature_mse(student: Tensor, teacher: Tensor, projection: nn.Module | None = None,
                mask: Tensor | None = None) -> Tensor:
    """Mean squared error between features (..., D_s) and (..., D_t), per element.

    Args:
        student: the student's features; mapped by ``projection`` (D_s → D_t) when given.
        teacher: the teacher's features; no gradient flows into them.
        projection: a learned map, needed when ``D_s != D_t``.
        mask: (...) boolean positions to count (e.g. non-padding tokens).
    """
    mapped = projection(student) if projection is not None else student
    if mapped.shape != teacher.shape:
        raise ValueError(f"student features {tuple(mapped.shape)} do not match the teacher's "
                         f"{tuple(teacher.shape)}; widths that differ need a projection")
    per_position = (mapped - teacher.detach().to(mapped.dtype)).pow(2).mean(-1)  # (...)
    return _masked_mean(per_position.reshape(-1), None if mask is None else mask.reshape(-1))


def cosine_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """``mean(1 − cos(student, teacher))`` over embeddings (N, D); 0 when they point the same way."""
    return (1.0 - F.cosine_similarity(student, teacher.detach().to(student.dtype), dim=-1)).mean()


def attention_kl(student_attention: Tensor, teacher_attention: Tensor, mask: Tensor | None = None) -> Tensor:
    """KL(teacher ‖ student) between attention distributions (B, H, T, T), averaged over heads and queries.

    Each row (one head, one query) is a probability distribution over keys. When the head counts
    differ, both are first averaged over heads (a distribution still). ``mask`` (B, T) marks the real
    (non-padding) query positions.
    """
    s, t = student_attention, teacher_attention.detach().to(student_attention.dtype)
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    if s.shape != t.shape:
        raise ValueError(f"attention maps {tuple(s.shape)} and {tuple(t.shape)} cover different positions")
    tiny = torch.finfo(s.dtype).tiny  # masked keys have probability 0 in both; 0 · log 0 counts as 0
    per_row = (t * (t.clamp_min(tiny).log() - s.clamp_min(tiny).log())).sum(-1)  # (B, H, T)
    rows = per_row.mean(1)  # (B, T)
    return _masked_mean(rows.reshape(-1), None if mask is None else mask.reshape(-1))


def learned_projection(student_width: int, teacher_width: int) -> nn.Module | None:
    """A bias-free linear map from student to teacher width, or None when the widths agree."""
    if student_width == teacher_width:
        return None
    return nn.Linear(student_width, teacher_width, bias=False)
