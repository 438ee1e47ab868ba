"""The core verbs: apply, prepare/step/finalize, and the method registry."""

from typing import Any, Literal

import pytest
import torch
from torch import nn

import slimkit
from slimkit.config import BaseConfig
from slimkit.method import Method, config_class, method_for, register, registered_names
from slimkit.quantize.primitives import dequantize, quantize
from slimkit.quantize.record import quant_records
from tests._models import tiny_llama, token_batches


def test_apply_rtn_reports_and_changes_only_targets():
    model = tiny_llama()
    embed = model.model.embed_tokens.weight.detach().clone()
    report = slimkit.apply(model, slimkit.RTNConfig(bits=4, granularity="group", group_size=16))
    assert report.method == "quant.rtn" and report.stats["layers"] == 14
    assert report.config["group_size"] == 16
    assert torch.equal(model.model.embed_tokens.weight, embed)  # tied lm_head excluded by default
    w = model.model.layers[0].mlp.up_proj.weight.detach()  # (96, 64): each group of 16 on its own 4-bit grid
    record = quant_records(model)["model.layers.0.mlp.up_proj.weight"]
    assert record.scale.shape == (96, 4)
    q = quantize(w, record.scale, record.zero, record.scheme)
    assert torch.equal(dequantize(q, record.scale, record.zero, record.scheme), w)


def test_registry_maps_names_to_configs():
    assert {"quant.rtn", "prune.magnitude"} <= set(registered_names())
    assert config_class("quant.rtn") is slimkit.RTNConfig
    with pytest.raises(KeyError, match="unknown method 'quant.nope'"):
        config_class("quant.nope")


class _CountConfig(BaseConfig):
    method: Literal["test.count"] = "test.count"
    needs_calibration = True


@register(_CountConfig)
class _CountMethod(Method[_CountConfig]):
    """Counts forward calls during calibration and records step progress."""

    def prepare(self, model: nn.Module) -> None:
        self.calls = 0
        self.progress: list[float] = []
        self.hooks.forward_hook(model, self._count)

    def _count(self, *args: Any) -> None:
        self.calls += 1

    def calibrate(self, model: nn.Module, forward_loop) -> None:
        forward_loop(model)

    def step(self, progress: float) -> None:
        self.progress.append(progress)

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        return {"calls": self.calls, "steps": len(self.progress)}


def test_lifecycle_calibrate_step_finalize_and_hooks_removed():
    model = tiny_llama()
    batches = token_batches(n=3)
    report = slimkit.apply(model, _CountConfig(), forward_loop=lambda m: [m(input_ids=b[None]) for b in batches])
    assert report.stats == {"calls": 3, "steps": 1}
    assert not model._forward_hooks


def test_calibrated_method_without_data_is_an_error():
    with pytest.raises(ValueError, match="needs calibration data"):
        slimkit.apply(tiny_llama(), _CountConfig())


def test_prepare_controller_validates_progress_and_finalizes_once():
    ctl = slimkit.prepare(tiny_llama(), _CountConfig())
    for p in (0.0, 0.5, 1.0):
        ctl.step(p)
    with pytest.raises(ValueError, match="progress"):
        ctl.step(1.5)
    assert ctl.finalize().stats["steps"] == 3
    with pytest.raises(RuntimeError):
        ctl.finalize()


def test_method_for_unregistered_config():
    class Orphan(BaseConfig):
        method: Literal["test.orphan"] = "test.orphan"

    with pytest.raises(KeyError, match="Orphan"):
        method_for(Orphan())
