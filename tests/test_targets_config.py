"""Targets matching, config validation and the HookSet."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from slimkit.config import Targets
from slimkit.hooks import HookSet
from slimkit.quantize.rtn import RTNConfig
from slimkit.targets import iter_targets, resolve_targets
from tests._models import tiny_llama


def names(model, targets):
    return [t.fqn for t in iter_targets(model, targets)]


def test_default_targets_take_linears_and_skip_tied_lm_head():
    model = tiny_llama()
    found = names(model, Targets())
    assert len(found) == 2 * 7  # q k v o gate up down per layer
    assert all(n.endswith(".weight") and "layers" in n for n in found)


def test_globs_match_parameter_or_module_names():
    model = tiny_llama()
    assert names(model, Targets(include=["*.mlp.*"])) == [
        f"model.layers.{i}.mlp.{p}_proj.weight" for i in range(2) for p in ("gate", "up", "down")]
    assert names(model, Targets(include=["model.layers.1.self_attn.q_proj"])) == [
        "model.layers.1.self_attn.q_proj.weight"]
    assert "lm_head.weight" in names(model, Targets(exclude=[]))


def test_tied_parameter_is_yielded_once():
    model = tiny_llama()
    both = names(model, Targets(exclude=[], module_types=["Linear", "Embedding"]))
    assert ("lm_head.weight" in both) != ("model.embed_tokens.weight" in both)


def test_empty_selection_is_a_clear_error():
    with pytest.raises(ValueError, match="matched no parameter"):
        resolve_targets(tiny_llama(), Targets(include=["nothing.*"]), "quant.rtn")


def test_configs_are_frozen_and_reject_unknown_keys():
    cfg = RTNConfig(bits=4, granularity="group", group_size=64)
    with pytest.raises(ValidationError):
        cfg.bits = 8  # type: ignore[misc]
    with pytest.raises(ValidationError, match="bitz"):
        RTNConfig.model_validate({"method": "quant.rtn", "bitz": 4})
    with pytest.raises(ValidationError, match="group_size"):
        RTNConfig(granularity="group")


def test_hookset_removes_hooks_and_restores_or_bakes_parametrizations():
    layer = nn.Linear(4, 3)
    original = layer.weight.detach().clone()
    calls = []
    hooks = HookSet()
    hooks.forward_hook(layer, lambda m, i, o: calls.append(1))

    class Zero(nn.Module):
        def forward(self, w):
            return torch.zeros_like(w)

    hooks.parametrize(layer, "weight", Zero())
    layer(torch.ones(1, 4))
    assert calls == [1] and torch.all(layer.weight == 0)
    hooks.remove_all()
    layer(torch.ones(1, 4))
    assert calls == [1] and torch.equal(layer.weight, original)
    hooks.parametrize(layer, "weight", Zero())
    hooks.bake_all()
    assert type(layer.weight) is nn.Parameter and torch.all(layer.weight == 0) and len(hooks) == 0
