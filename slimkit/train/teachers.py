"""Who is taught by whom in ``slimkit compress``: the student the recipe compresses and its frozen teacher.

With a ``train.distill`` block:

* no ``student``, no ``teacher``: the input model is the student and a frozen copy of it, taken before
  the recipe's first step, is the teacher (recovery of a compressed model towards its original);
* ``teacher: SPEC``: that model teaches the input model;
* ``student: SPEC``: that model (a model spec, or a registered architecture ``ARCH[key=value,...]`` built
  with fresh weights from the train section's seed) becomes the model the recipe compresses, trains and
  saves, and the input model teaches (unless ``teacher`` names another).

Also the run's fingerprint, which ties a checkpoint directory to one command (model, recipe, data).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch

from slimkit.distill.section import DistillSection
from slimkit.models.bundle import ModelBundle
from slimkit.models.loading import load_model
from slimkit.models.torch_io import parse_arch_name
from slimkit.models.zoo import architecture_names, build_architecture


def frozen_copy(bundle: ModelBundle) -> ModelBundle:
    """A copy of ``bundle`` whose model no step can touch: the default teacher."""
    teacher = copy.copy(bundle)
    teacher.model = copy.deepcopy(bundle.model).eval().requires_grad_(False)
    teacher.applied = list(bundle.applied)
    return teacher


def _registered_architecture(spec: str) -> bool:
    """``ARCH`` or ``ARCH[...]`` naming a registered architecture, without ``=WEIGHTS``."""
    if not re.fullmatch(r"[\w.-]+(\[.*\])?", spec):
        return False
    return parse_arch_name(spec)[0] in architecture_names()


def load_student(spec: str, seed: int) -> ModelBundle:
    """The student ``spec`` names: a fresh registered architecture (seeded), or any loadable model."""
    if _registered_architecture(spec):
        name, kwargs = parse_arch_name(spec)
        torch.manual_seed(seed)  # the student's initial weights follow the train section's seed
        model = build_architecture(name, kwargs).eval()
        return ModelBundle(model, "torch", spec, arch={"name": name, "kwargs": kwargs})
    return load_model(spec)


def distillation_models(bundle: ModelBundle, distill: DistillSection | None,
                        seed: int = 0) -> tuple[ModelBundle, ModelBundle | None]:
    """``(student, teacher)`` for a recipe whose train section has ``distill`` (teacher None without it)."""
    if distill is None:
        return bundle, None
    teacher = load_model(distill.teacher) if distill.teacher else None
    if distill.student:
        if teacher is None:
            bundle.model.eval().requires_grad_(False)
        return load_student(distill.student, seed), teacher or bundle
    return bundle, teacher or frozen_copy(bundle)


def run_fingerprint(*parts: Any) -> str:
    """A short hash of what decides a training run (model source, recipe, data specs, sample counts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_checkpoint_dir(out: Path) -> Path:
    """``OUT.training`` beside the output directory."""
    return out.parent / f"{out.name}.training"
