"""``train.finetune``: recovery training that keeps what the one-shot steps before it decided.

A recipe puts it after any one-shot step (structured pruning, SparseGPT / Wanda / magnitude, GPTQ /
AWQ / RTN) to train the compressed model back towards the original, usually with a ``train.distill``
block so the original model teaches. Whatever the earlier steps fixed stays fixed:

* **pruning masks**: every targeted weight keeps its exact zeros (a fixed keep-mask parametrization,
  ``w · keep``: pruned entries stay 0.0 and receive no gradient);
* **integer grids**: every weight that carries a quantization record (targeted or not, e.g. a
  quantized ``lm_head``) is fake-quantized with its *recorded* scales and zero points, with a
  straight-through gradient, so the float weights behind it learn while the model always runs on the
  grid; ``finalize`` snaps the weights exactly onto it, so the model saves packed as before;
* **shared codebooks** (``cluster.kmeans``) are left to ``cluster.finetune``: such weights are frozen here.

Structured pruning needs nothing: its smaller layers simply train. Everything else (biases, norms,
embeddings, untouched layers) trains as in any fine-tune. Without earlier compression this is a plain
fine-tune. Like every training method it is driven by a recipe's ``train:`` section or by
``slimkit.prepare(model, FinetuneConfig())`` with ``step``/``finalize`` around the user's own loop
(create the optimizer after ``prepare``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimkit.cluster.record import get_share_note
from slimkit.config import BaseConfig
from slimkit.method import Method, register
from slimkit.quantize.fake_quant import straight_through
from slimkit.quantize.primitives import as_matrix, dequantize, quantize
from slimkit.quantize.record import QuantRecord, get_quant_record, quant_records
from slimkit.targets import iter_targets


class FinetuneConfig(BaseConfig):
    """Fine-tune inside the recipe's training run, keeping pruning masks, integer grids and codebooks fixed."""

    method: Literal["train.finetune"] = "train.finetune"

    needs_training = True


class FixedCompression(nn.Module):
    """Parametrization: ``w · keep`` (if a mask is given), then onto the record's grid (if a record is given)."""

    keep: Tensor | None

    def __init__(self, keep: Tensor | None, record: QuantRecord | None) -> None:
        super().__init__()
        self.register_buffer("keep", keep)  # same shape as the weight, bool; None: nothing is pruned
        self.record = record

    def snap(self, weight: Tensor) -> Tensor:
        """The weight's values on the recorded grid (no gradient)."""
        assert self.record is not None
        r = self.record
        w = as_matrix(weight.detach())  # (rows, cols)
        return dequantize(quantize(w, r.scale, r.zero, r.scheme), r.scale, r.zero, r.scheme).to(weight.dtype) \
            .reshape(weight.shape)

    def forward(self, weight: Tensor) -> Tensor:
        if self.keep is not None:
            weight = weight * self.keep.to(weight.dtype)
        if self.record is not None:
            weight = straight_through(weight, self.snap(weight))
        return weight


def _module_and_name(model: nn.Module, fqn: str) -> tuple[nn.Module, str]:
    module_name, _, param_name = fqn.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), param_name


@register(FinetuneConfig)
class FinetuneMethod(Method[FinetuneConfig]):
    """Fixed masks and fixed-grid fake quantization during training; exact grid values at finalize."""

    def __init__(self, config: FinetuneConfig) -> None:
        super().__init__(config)
        self._fixed: dict[str, tuple[nn.Module, str, FixedCompression]] = {}
        self._frozen: list[nn.Parameter] = []
        self._prepared = False

    def prepare(self, model: nn.Module) -> None:
        masks = {t.fqn: t for t in iter_targets(model, self.config.targets)}
        records = quant_records(model)
        for fqn in sorted(set(masks) | set(records)):
            module, name = _module_and_name(model, fqn)
            param = getattr(module, name)
            if get_share_note(module, name) is not None:
                param.requires_grad_(False)  # codebook weights train through cluster.finetune only
                self._frozen.append(param)
                continue
            keep = param.detach() != 0 if fqn in masks and bool((param == 0).any()) else None
            record = get_quant_record(module, name)
            if keep is None and record is None:
                continue
            fixed = FixedCompression(keep, record)
            self.hooks.parametrize(module, name, fixed)
            self._fixed[fqn] = (module, name, fixed)
        self._prepared = True

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        if not self._prepared:
            raise RuntimeError("train.finetune: finalize() before prepare()")
        self.hooks.bake_all()  # weights become w · keep on the grid
        with torch.no_grad():
            for module, name, fixed in self._fixed.values():
                if fixed.record is not None:  # STE arithmetic leaves last-ulp noise: snap exactly onto the grid
                    weight = getattr(module, name)
                    weight.copy_(fixed.snap(weight))
        for param in self._frozen:
            param.requires_grad_(True)
        masked = [f for _, _, f in self._fixed.values() if f.keep is not None]
        kept = sum(int(f.keep.sum()) for f in masked if f.keep is not None)
        total = sum(f.keep.numel() for f in masked if f.keep is not None)
        return {"masked_weights": len(masked), "masked_sparsity": round(1 - kept / total, 4) if total else 0.0,
                "weights_on_grid": sum(f.record is not None for _, _, f in self._fixed.values()),
                "codebook_weights_frozen": len(self._frozen)}

