"""Sparsity-inducing loss terms the user adds to their own training loss.

* L1 (lasso): ``Σ |w|`` over the targeted weights, pushes individual weights to zero (pair with
  ``prune.magnitude`` / ``prune.gradual``).
* Group lasso (Yuan & Lin, 2006; Wen et al., 2016 "Learning structured sparsity"): ``Σ_units ‖w_unit‖₂``
  over every weight of each removable unit (producer rows and consumer columns, see
  :mod:`slimkit.prune.structured.groups`), pushes whole neurons/channels/heads to zero; then
  ``prune.structured`` with ``threshold`` removes the units whose norm fell below it.

Scaling: both terms are plain *sums* (not means), so ``loss = task_loss + λ · penalty`` with ``λ``
independent of batch size; a bigger model yields a bigger penalty, so retune ``λ`` per model (typical
starting points: L1 ``λ ≈ 1e-5``, group lasso ``λ ≈ 1e-4`` for LeNet-sized models trained with Adam).
All units of one group have equal size, so Yuan & Lin's ``√(group size)`` factor is a constant per
group and is left out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimkit.config import Targets
from slimkit.prune.structured.groups import Structure, find_groups
from slimkit.prune.structured.surgery import unit_views
from slimkit.targets import iter_targets


def l1_penalty(weights: list[Tensor]) -> Tensor:
    """``Σ |w|`` over all entries of ``weights`` (a scalar, differentiable)."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def group_lasso_penalty(views: list[Tensor]) -> Tensor:
    """``Σ_u ‖[v₁[u], v₂[u], …]‖₂``: one L2 norm per unit over its rows in every (units, k_i) view.

    The norm's subgradient at zero is taken as zero (``torch.linalg.vector_norm``), so units that
    reached exactly zero stay finite.
    """
    rows = torch.cat([v.reshape(v.shape[0], -1) for v in views], dim=1)  # (units, Σ k_i)
    return torch.linalg.vector_norm(rows, dim=1).sum()


def model_l1(model: nn.Module, targets: Targets | None = None) -> Tensor:
    """L1 penalty over the weights selected by ``targets`` (default: every Linear/Conv weight)."""
    return l1_penalty([t.param for t in iter_targets(model, targets or Targets(exclude=()))])


def model_group_lasso(model: nn.Module, structure: Structure = "sequential") -> Tensor:
    """Group-lasso penalty summed over every unit group of ``structure`` in ``model``."""
    groups = find_groups(model, structure)
    return torch.stack([group_lasso_penalty(unit_views(model, g)) for g in groups]).sum()
