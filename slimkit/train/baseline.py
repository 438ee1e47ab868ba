"""Baselines from nothing: train a registered architecture on a labelled image set (``slimkit train``).

Deep Compression starts from a trained network; so that a user can reproduce the whole pipeline without
writing code, ``slimkit train ARCH --data DATA --out DIR`` builds a registered architecture
(:mod:`slimkit.models.zoo`: ``lenet-300-100``, ``lenet-5``, ``small-cnn``, ``mlp``), trains it on the
data set's training split with :func:`~slimkit.train.classifier.train_classifier` (seeded: the same
seed gives the same weights), measures accuracy on the test split and returns a bundle that the slimkit
format saves and ``slimkit compress`` loads. The architecture's input shape is checked against the
data before any training, with the arguments to pass when they differ.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from slimkit.data.images import image_data
from slimkit.data.spec import parse_data_spec
from slimkit.eval.metrics import accuracy
from slimkit.models.bundle import ModelBundle
from slimkit.models.torch_io import parse_arch_name
from slimkit.models.zoo import architecture_arguments, architecture_input_shape, architecture_names, build_architecture
from slimkit.train.classifier import TrainConfig, train_classifier


def check_architecture(spec: str) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` of an ``ARCH[key=value,...]`` spec naming a registered architecture."""
    name, kwargs = parse_arch_name(spec)
    if name not in architecture_names():
        raise ValueError(f"unknown architecture {name!r}; registered: {', '.join(architecture_names())}")
    return name, kwargs


def check_input_fits(name: str, kwargs: dict[str, Any], x: Tensor, data: str) -> None:
    """Refuse an architecture whose input shape differs from one sample of the data, naming both."""
    shape = architecture_input_shape(name, kwargs)
    sample = tuple(x.shape[1:])
    fits = shape is None or shape == sample or (len(shape) == 1 and shape[0] == x[0].numel())
    if not fits:
        raise ValueError(f"{name} takes inputs of shape {shape}, but {data} has samples of shape {sample}; give "
                         f"the architecture's arguments as {name}[key=value,...] (it takes: "
                         f"{architecture_arguments(name)})")


def train_architecture(spec: str, data: str, config: TrainConfig) -> tuple[ModelBundle, float]:
    """Train the architecture ``spec`` on ``data``'s training split; returns the bundle and test accuracy."""
    name, kwargs = check_architecture(spec)
    parsed = parse_data_spec(data)
    if parsed.is_text:
        raise ValueError(f"slimkit train trains image classifiers; {data} is text")
    x, y = image_data(parsed.kind, parsed.arg, "train")
    check_input_fits(name, kwargs, x, data)
    torch.manual_seed(config.seed)  # the initial weights, as the batch order, follow the seed
    model = build_architecture(name, kwargs)
    losses = train_classifier(model, x, y, config)
    x_test, y_test = image_data(parsed.kind, parsed.arg, "test")
    with torch.no_grad():
        test_accuracy = accuracy(model.eval(), x_test, y_test)
    record = {"method": "train", "config": {"data": data, **asdict(config)},
              "stats": {"test_accuracy": round(test_accuracy, 4), "train_loss_last": round(losses[-1], 4)}}
    bundle = ModelBundle(model.eval(), "torch", spec, arch={"name": name, "kwargs": kwargs}, applied=[record])
    return bundle, test_accuracy
