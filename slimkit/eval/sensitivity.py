"""Layer sensitivity analysis (``slimkit analyze``): how much each layer group suffers under each setting.

For every layer group (:mod:`slimkit.eval.layer_groups`) and every tried setting
(:mod:`slimkit.eval.settings`), the setting is applied to that group alone with the real data-free method
(RTN, magnitude pruning, k-means), the rest of the model untouched, and the :class:`~slimkit.eval.probe.Probe`
scores the drift from the original; the weights are then restored. The group's bytes on disk under every
setting the search may choose are measured by encoding its tensors with the slimkit format's codecs (no
evaluation needed). When the search will fine-tune every trial after its one-shot steps, the cost that matters
is the one left after that recovery: one-shot pruning of LeNet-300-100's first layer to 90% loses most of its
accuracy yet fine-tunes back to within a fraction of a point (Deep Compression's retraining), so ranking by the
one-shot drift keeps the search away from sparsity altogether. With a ``recovery`` the caller supplies, each
option the search may choose, sparsity × codebook pairs included (recovered costs do not add up: a codebook
applied after the fine-tuning that won a pruning back is not recovered itself), is scored on a recovered copy
instead, minus the score of the untouched model recovered the same way (fine-tuning alone moves the outputs).
Results go to a JSON cache file keyed by the model's weights, the data, the probe budget and the recovery,
written after every measurement: a rerun (or ``compress --target-size``) measures only what is missing, and an
interrupted analysis resumes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from slimkit.api import apply
from slimkit.config import FrozenModel
from slimkit.data.spec import parse_data_spec
from slimkit.eval.layer_groups import LayerGroup, layer_groups
from slimkit.eval.probe import Probe, Proxy
from slimkit.eval.settings import Setting, search_options
from slimkit.export.codecs import compress_state_dict
from slimkit.export.registry import collect_notes
from slimkit.models.bundle import ModelBundle
from slimkit.progress import console, progress_bar

CACHE_VERSION = 1
UNTOUCHED = ""  # the bytes key of a group left as it is
#: A recovered copy of the model with ``setting`` applied to ``group`` (``None``: nothing applied), the original
#: left as it is: what the search's trials will be before they are evaluated.
Recovery = Callable[[LayerGroup | None, Setting | None], ModelBundle]


class SensitivityConfig(FrozenModel):
    """The probe budget and grouping of an analysis (all part of the cache key)."""

    proxy: Proxy = "divergence"
    windows: int = Field(4, ge=1)  # causal LM: token windows of the val split
    seq_len: int = Field(256, ge=2)
    samples: int = Field(256, ge=1)  # images or sentences
    per_layer: bool = False


def default_cache_dir() -> Path:
    """``$SLIMKIT_CACHE`` or ``$XDG_CACHE_HOME/slimkit`` (``~/.cache/slimkit``), plus ``sensitivity``."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = os.environ.get("SLIMKIT_CACHE") or cache_home / "slimkit"
    return Path(root) / "sensitivity"


@dataclass
class SensitivityTable:
    """Scores per group and setting, bytes per group and option, and where they are cached."""

    groups: list[LayerGroup]
    settings: list[Setting]
    scores: dict[str, dict[str, float]]  # group name -> setting key -> score (0 = like the original)
    bytes: dict[str, dict[str, int]]  # group name -> option key (UNTOUCHED for as-is) -> bytes on disk
    metric_name: str
    proxy: str
    cache_file: Path | None = None
    evaluations: int = 0  # model evaluations this run needed (0 when everything came from the cache)
    notes: list[str] = field(default_factory=list)
    recovery: str = ""  # the recovery each pair was scored after (its recovery_key), "" for one-shot

    def score(self, group: str, setting: Setting) -> float:
        """The setting's score; a pair not measured itself (one-shot analyses) scores the sum of its singles."""
        measured = self.scores[group]
        return measured[setting.key] if setting.key in measured else sum(measured[s.key] for s in setting.singles)

    def to_dict(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "metric": self.metric_name, "cache_file": str(self.cache_file or ""),
                "evaluations": self.evaluations, "recovery": self.recovery, "settings": [s.key for s in self.settings],
                "groups": [{"name": g.name, "include": list(g.include), "params": g.numel} for g in self.groups],
                "scores": self.scores, "bytes": self.bytes}


def model_fingerprint(bundle: ModelBundle) -> str:
    """SHA-256 of every tensor's name, shape, dtype and bytes (changes whenever any weight does)."""
    digest = hashlib.sha256(bundle.kind.encode())
    for name, t in bundle.model.state_dict().items():
        t = t.detach().contiguous().cpu()
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        if t.numel():
            digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _cache_file(bundle: ModelBundle, data: str, config: SensitivityConfig, cache_dir: Path, recovery_key: str) -> Path:
    key = json.dumps({"v": CACHE_VERSION, "model": model_fingerprint(bundle), "data": data,
                      "probe": config.model_dump(mode="json"), **({"recovery": recovery_key} if recovery_key else {})},
                     sort_keys=True)
    return cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"scores": {}, "bytes": {}}  # missing or damaged: measure again
    return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {"scores": {}, "bytes": {}}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({**data, "version": CACHE_VERSION}), encoding="utf-8")
    tmp.replace(path)  # a reader sees the old file or the new one, never half of one


@contextmanager
def perturbed(bundle: ModelBundle, group: LayerGroup, setting: Setting) -> Iterator[None]:
    """Apply ``setting`` to ``group`` alone (real data-free methods); restore weights and notes afterwards."""
    model = bundle.model
    params = {fqn: model.get_parameter(fqn) for fqn in group.params}
    saved = {fqn: p.detach().clone() for fqn, p in params.items()}
    modules = {fqn.rpartition(".")[0] for fqn in group.params}
    notes = {m: {k: copy.copy(v) for k, v in model.get_submodule(m).__dict__.items() if k.startswith("_slimkit")}
             for m in modules}  # QuantRecords, codebook notes: what a method leaves besides the weights
    try:
        for config in setting.configs(group.include):
            apply(model, config)
        yield
    finally:
        with torch.no_grad():
            for fqn, p in params.items():
                p.copy_(saved[fqn])
        for m, before in notes.items():
            state = model.get_submodule(m).__dict__
            for key in [k for k in state if k.startswith("_slimkit")]:
                del state[key]
            state.update(before)


def group_bytes(bundle: ModelBundle, group: LayerGroup) -> int:
    """Bytes the group's tensors take in the slimkit format as they are now (codec chosen by their notes)."""
    notes = collect_notes(bundle.model)
    state = {fqn: bundle.model.get_parameter(fqn).detach() for fqn in group.params}
    tensors, _ = compress_state_dict(state, {k: v for k, v in notes.items() if k in state})
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _measure_bytes(bundle: ModelBundle, groups: list[LayerGroup], options: list[Setting],
                   cache: dict[str, Any], save: Any) -> None:
    for group in groups:
        sizes = cache["bytes"].setdefault(group.name, {})
        if UNTOUCHED not in sizes:
            sizes[UNTOUCHED] = group_bytes(bundle, group)
        missing = [o for o in options if o.key not in sizes]
        for option in missing:
            with perturbed(bundle, group, option):
                sizes[option.key] = group_bytes(bundle, group)
        if missing:
            save()


def _scorer(bundle: ModelBundle, probe: Probe, cache: dict[str, Any], recovery: Recovery | None,
            save: Callable[[], None]) -> Callable[[LayerGroup, Setting], float]:
    """Score one (group, setting) pair: perturbed in place, or recovered minus the recovered untouched model."""
    if recovery is None:
        def one_shot(group: LayerGroup, setting: Setting) -> float:
            with perturbed(bundle, group, setting):
                return probe.score(bundle)
        return one_shot

    def recovered(group: LayerGroup, setting: Setting) -> float:
        if "recovered_untouched" not in cache:
            cache["recovered_untouched"] = probe.score(recovery(None, None))
            save()
        return probe.score(recovery(group, setting)) - cache["recovered_untouched"]
    return recovered


def analyze_sensitivity(bundle: ModelBundle, data: str, settings: list[Setting],
                        config: SensitivityConfig | None = None, cache_dir: Path | None = None,
                        recovery: Recovery | None = None, recovery_key: str = "") -> SensitivityTable:
    """Score every (layer group, setting) pair on ``data``'s probe inputs, reusing cached scores.

    Args:
        bundle: the original model (restored after every perturbation).
        data: data spec whose validation part feeds the probe (text ``val`` split, held-out train images).
        settings: single settings to score (:func:`slimkit.eval.settings.parse_tries`); the bytes of their
            sparsity × codebook pairs are measured too.
        config: probe budget, proxy and grouping.
        cache_dir: where cache files live (default :func:`default_cache_dir`); ``None`` for the default.
        recovery: score each pair on the copy this returns (the search's fine-tuning) instead of one-shot.
        recovery_key: what identifies the recovery (its training settings) in the cache key; required with it.

    Returns:
        The :class:`SensitivityTable`; ``evaluations`` says how many model evaluations this call ran.
    """
    config = config or SensitivityConfig()
    if recovery is not None and not recovery_key:
        raise ValueError("analyze_sensitivity: a recovery needs a recovery_key naming its settings (cache key)")
    spec = parse_data_spec(data)
    groups = layer_groups(bundle.model, config.per_layer)
    path = _cache_file(bundle, str(spec), config, cache_dir or default_cache_dir(), recovery_key)
    cache = _read_cache(path)
    probe = Probe(bundle, spec, config.proxy, config.windows, config.seq_len, config.samples)
    scored = settings if recovery is None else search_options(settings)
    todo = [(g, s) for g in groups for s in scored if s.key not in cache["scores"].get(g.name, {})]
    if todo:
        console.print(f"sensitivity: {len(todo)} of {len(groups) * len(scored)} (group, setting) pairs to measure "
                      f"({len(groups)} groups; cache {path})")
        probe.reference(bundle)
        score = _scorer(bundle, probe, cache, recovery, lambda: _write_cache(path, cache))
        with progress_bar("sensitivity" + (" (recovered)" if recovery else ""), len(todo), eta=True) as advance:
            for group, setting in todo:
                cache["scores"].setdefault(group.name, {})[setting.key] = score(group, setting)
                _write_cache(path, cache)
                advance(1)
    _measure_bytes(bundle, groups, search_options(settings), cache, lambda: _write_cache(path, cache))
    scores = {g.name: {s.key: cache["scores"][g.name][s.key] for s in scored} for g in groups}
    return SensitivityTable(groups, settings, scores, cache["bytes"], probe.metric_name, config.proxy, path,
                            probe.evaluations, recovery=recovery_key)
