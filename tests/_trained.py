"""A LeNet-300-100 (64 inputs) trained on scikit-learn's 8×8 digits, for tests that need a model whose accuracy
means something (sensitivity rankings, budget searches). Trained once per test process (a few seconds) and
handed out as copies."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch

from slimkit.models.bundle import ModelBundle


@lru_cache(maxsize=1)
def _trained() -> ModelBundle:
    from slimkit.data.images import digits
    from tests._models import lenet_bundle

    bundle = lenet_bundle(seed=0, in_features=64)
    x, y = digits("train")
    x = x.reshape(len(x), -1)
    opt = torch.optim.Adam(bundle.model.parameters(), lr=1e-2)
    bundle.model.train()
    for _ in range(60):  # full-batch steps: about 95% test accuracy, in well under a second on an idle CPU
        opt.zero_grad()
        torch.nn.functional.cross_entropy(bundle.model(x), y).backward()
        opt.step()
    bundle.model.eval()
    return bundle


def trained_lenet_digits() -> ModelBundle:
    """A fresh copy of the trained LeNet (callers may compress it in place)."""
    original = _trained()
    bundle = copy.copy(original)
    bundle.model = copy.deepcopy(original.model)
    bundle.applied = list(original.applied)
    return bundle
