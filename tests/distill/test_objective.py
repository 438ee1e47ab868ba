"""The distillation objective: gradients reach the student only, the teacher stays frozen in eval mode,
feature taps go through a HookSet and learned projections bridge different widths."""

import copy

import pytest
import torch
from torch import nn

from slimkit.distill.losses import kd_kl
from slimkit.distill.objective import DistillObjective
from slimkit.distill.section import DistillSection, FeaturePair
from slimkit.distill.tasks import CausalLMTask, ClassifierTask
from tests._models import tiny_llama, token_batches


def _mlp(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, 4))


def test_gradients_reach_the_student_only_and_the_teacher_stays_frozen_in_eval_mode():
    teacher, student = _mlp(32, 0), _mlp(6, 1)
    before = copy.deepcopy(teacher.state_dict())
    section = DistillSection(temperature=3.0, alpha=0.7, features=(FeaturePair(student="0", teacher="0"),))
    objective = DistillObjective(student, teacher, ClassifierTask(), section)
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    objective.add_projections((x, y))
    assert objective.projections["0"].weight.shape == (32, 6)  # student width 6 -> teacher width 32
    objective.train()
    assert not teacher.training  # objective.train() does not reach the teacher (not a submodule)
    objective((x, y)).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert objective.projections["0"].weight.grad is not None
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert {n for n, _ in objective.named_parameters()} == {n for n, _ in objective.named_parameters()
                                                          if n.startswith(("student.", "projections."))}
    assert len(objective.hooks) == 2
    objective.close()
    assert len(objective.hooks) == 0 and not teacher._forward_hooks and not student[0]._forward_hooks


def test_the_loss_is_the_alpha_mix_of_soft_and_hard_terms():
    teacher, student = _mlp(16, 0).eval(), _mlp(16, 1).eval()
    x, y = torch.randn(10, 8), torch.randint(0, 4, (10,))
    for hard_targets, targets in (("labels", y), ("teacher", teacher(x).argmax(-1))):
        section = DistillSection(temperature=2.0, alpha=0.25, hard_targets=hard_targets)
        objective = DistillObjective(student, teacher, ClassifierTask(), section).eval()
        s, t = student(x), teacher(x)
        expected = 0.25 * kd_kl(s, t, 2.0) + 0.75 * nn.functional.cross_entropy(s, targets)
        torch.testing.assert_close(objective((x, y)), expected)


def test_causal_lm_distillation_from_itself_is_zero_and_feature_names_are_checked():
    model = tiny_llama()
    objective = DistillObjective(model, copy.deepcopy(model), CausalLMTask(), DistillSection(alpha=1.0)).eval()
    with torch.no_grad():
        assert float(objective(token_batches(n=2, seq_len=12))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="student has no module 'model.layers.9'"):
        DistillObjective(model, copy.deepcopy(model), CausalLMTask(),
                         DistillSection(features=(FeaturePair(student="model.layers.9", teacher="model.layers.0"),)))


def test_attention_transfer_switches_to_eager_attention_and_back():
    teacher, student = tiny_llama(0), tiny_llama(1)
    section = DistillSection(alpha=1.0, attention=({"student": 1, "teacher": 1, "weight": 2.0},))
    objective = DistillObjective(student, teacher, CausalLMTask(), section)
    assert student.config._attn_implementation == "eager"
    batch = token_batches(n=2, seq_len=12)
    loss = objective(batch)
    only_logits = DistillObjective(student, teacher, CausalLMTask(), DistillSection(alpha=1.0))(batch)
    assert float(loss) > float(only_logits)  # the attention term adds a positive KL
    loss.backward()
    assert student.model.layers[1].self_attn.q_proj.weight.grad.abs().sum() > 0
    objective.close()
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"
