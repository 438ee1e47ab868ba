"""The groups of layers that sensitivity analysis perturbs one at a time and the search gives one setting each.

In a transformer every block contributes two groups, its attention Linears and its FFN Linears (an LLM has
hundreds of Linears, but a block's q/k/v/o share their input and their fate); any other targeted layer
(a classifier's ``fc1``, BERT's pooler) is a group of its own. ``per_layer=True`` makes every Linear/Conv
its own group. Each group is written as ``Targets`` include globs (``model.layers.3.mlp.*``), so a recipe
built from groups reads like one a person would write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from slimkit.config import Targets
from slimkit.export.codecs import compress_state_dict
from slimkit.export.registry import collect_notes
from slimkit.models.arch import decoder_layers, layer_prefix
from slimkit.targets import Target, iter_targets

_ATTENTION_WORDS = ("attn", "attention")


@dataclass(frozen=True)
class LayerGroup:
    """Layers that take one setting together: a name, the include globs and the parameters they select."""

    name: str
    include: tuple[str, ...]
    params: tuple[str, ...]  # full parameter names, in module order
    numel: int

    def targets(self) -> Targets:
        return Targets(include=self.include)


def _block_prefixes(model: nn.Module) -> list[str]:
    try:
        layers = decoder_layers(model)
    except ValueError:  # not a transformer: every layer is its own group
        return []
    return [layer_prefix(model, layers, i) for i in range(len(layers))]


def _group_of(module_name: str, prefixes: list[str]) -> tuple[str, str] | None:
    """``(group name, include glob)`` for a module inside a transformer block, else ``None``."""
    for prefix in prefixes:
        if module_name.startswith(prefix + "."):
            child = module_name[len(prefix) + 1:].split(".")[0]
            kind = "attention" if any(w in child.lower() for w in _ATTENTION_WORDS) else "ffn"
            return f"{prefix}.{kind}", f"{prefix}.{child}.*"
    return None


def layer_groups(model: nn.Module, per_layer: bool = False) -> list[LayerGroup]:
    """The groups of ``model``'s default targets (Linear/Conv weights, ``lm_head`` excluded), in model order.

    Raises:
        ValueError: the model has no Linear/Conv weight to compress.
    """
    prefixes = [] if per_layer else _block_prefixes(model)
    found: dict[str, tuple[list[str], list[Target]]] = {}
    for t in iter_targets(model, Targets()):
        group = _group_of(t.module_name, prefixes)
        name, glob = group if group else (t.module_name, t.module_name)
        globs, members = found.setdefault(name, ([], []))
        if glob not in globs:
            globs.append(glob)
        members.append(t)
    if not found:
        raise ValueError(f"{type(model).__name__}: no Linear/Conv weight to analyse")
    return [LayerGroup(name, tuple(globs), tuple(t.fqn for t in members), sum(t.param.numel() for t in members))
            for name, (globs, members) in found.items()]


def layer_storage(model: nn.Module) -> list[dict[str, Any]]:
    """Per Linear/Conv weight: parameters, bits per weight on disk (as the slimkit format stores it now) and
    the fraction of zeros; what the report's per-layer bars show."""
    notes = collect_notes(model)
    rows = []
    for t in iter_targets(model, Targets()):
        w = t.param.detach()
        tensors, _ = compress_state_dict({t.fqn: w}, {t.fqn: notes[t.fqn]} if t.fqn in notes else {})
        stored = sum(x.numel() * x.element_size() for x in tensors.values())
        rows.append({"name": t.module_name, "params": w.numel(), "bits_per_weight": round(8 * stored / w.numel(), 3),
                     "sparsity": round(float((w == 0).float().mean()), 4)})
    return rows
