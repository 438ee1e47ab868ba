"""Per-layer compression settings: what ``slimkit analyze --try`` measures and the budget search chooses among.

A :class:`Setting` is one choice for one group of layers: an integer grid (``bits``, optionally with a
``group_size``), a k-means codebook (``codebook`` bits) and/or a ``sparsity``. ``--try`` texts such as
``bits=2,3,4,8``, ``group_size=64,128``, ``codebook=4,5`` and ``sparsity=0.3,0.5`` expand to single
settings (every bits value with every group size); :func:`search_options` adds sparsity × codebook
pairs, the only pairs that save bytes in the slimkit format (an ``int`` tensor stores its zeros as
integers; a codebook tensor stores only the kept entries and their positions). Each setting becomes
real method configs (RTN/GPTQ, magnitude/SparseGPT, k-means) restricted to the layers by ``Targets``
globs, so a searched model is an ordinary recipe.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from slimkit.cluster.weight_sharing import KMeansClusterConfig
from slimkit.config import BaseConfig, Targets
from slimkit.prune.magnitude import MagnitudePruneConfig
from slimkit.prune.sparsegpt import SparseGPTConfig
from slimkit.quantize.gptq import GPTQConfig
from slimkit.quantize.rtn import RTNConfig

TRY_KNOBS = ("bits", "group_size", "codebook", "sparsity")


@dataclass(frozen=True)
class Setting:
    """One compression choice for one group of layers; unset fields leave that aspect untouched."""

    bits: int | None = None
    group_size: int | None = None  # with bits: None is one scale per output channel
    codebook: int | None = None
    sparsity: float | None = None

    def __post_init__(self) -> None:
        if self.group_size is not None and self.bits is None:
            raise ValueError("group_size only applies to an integer grid (bits)")
        if self.bits is not None and self.codebook is not None:
            raise ValueError("a layer takes an integer grid (bits) or a codebook, not both")

    @property
    def key(self) -> str:
        """A stable text key (cache files, recipes, reports): ``bits=4,group_size=128``."""
        return ",".join(f"{k}={getattr(self, k)}" for k in TRY_KNOBS if getattr(self, k) is not None)

    @property
    def label(self) -> str:
        """A short human label: ``int4 g128``, ``int8``, ``cb4``, ``50% + cb4``."""
        parts = []
        if self.sparsity is not None:
            parts.append(f"{self.sparsity:.0%}")
        if self.bits is not None:
            parts.append(f"int{self.bits}" + (f" g{self.group_size}" if self.group_size else ""))
        if self.codebook is not None:
            parts.append(f"cb{self.codebook}")
        return " + ".join(parts) or "fp32"

    @property
    def singles(self) -> tuple[Setting, ...]:
        """The one-knob settings this one combines (its sparsity and its grid), each measured on its own."""
        grid = Setting(self.bits, self.group_size, self.codebook)
        sparse = Setting(sparsity=self.sparsity)
        return tuple(s for s in (sparse, grid) if s.key)

    @staticmethod
    def from_key(key: str) -> Setting:
        """Inverse of :attr:`key`."""
        fields: dict[str, float | int] = {}
        for pair in key.split(","):
            name, _, value = pair.partition("=")
            fields[name] = float(value) if name == "sparsity" else int(value)
        return Setting(**fields)  # type: ignore[arg-type]

    def prune_config(self, include: tuple[str, ...], calibrated: bool) -> BaseConfig | None:
        """The pruning step for layers ``include`` (SparseGPT with calibration data, else magnitude)."""
        if self.sparsity is None:
            return None
        targets = Targets(include=include)
        if calibrated:
            return SparseGPTConfig(sparsity=self.sparsity, targets=targets)
        return MagnitudePruneConfig(sparsity=self.sparsity, targets=targets)

    def grid_config(self, include: tuple[str, ...], calibrated: bool) -> BaseConfig | None:
        """The quantization / weight-sharing step for layers ``include`` (GPTQ with calibration data, else RTN)."""
        targets = Targets(include=include)
        if self.codebook is not None:
            return KMeansClusterConfig(bits=self.codebook, targets=targets)
        if self.bits is None:
            return None
        grid = ({"granularity": "group", "group_size": self.group_size} if self.group_size
                else {"granularity": "channel", "group_size": None})
        if calibrated:
            return GPTQConfig(bits=self.bits, targets=targets, **grid)  # type: ignore[arg-type]
        return RTNConfig(bits=self.bits, targets=targets, **grid)  # type: ignore[arg-type]

    def configs(self, include: tuple[str, ...], calibrated: bool = False) -> list[BaseConfig]:
        """The method configs that apply this setting to ``include``: pruning first, then the grid."""
        steps = [self.prune_config(include, calibrated), self.grid_config(include, calibrated)]
        return [s for s in steps if s is not None]


def _values(text: str, knob: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(f"--try {knob}=: give at least one value")
    return values


def _parse_value(knob: str, value: str, where: str) -> int | float | None:
    try:
        if knob == "sparsity":
            number = float(value.removesuffix("%")) / (100 if value.endswith("%") else 1)
            if not 0.0 < number < 1.0:
                raise ValueError
            return number
        if knob == "group_size" and value == "channel":
            return None
        number = int(value)
    except ValueError:
        kinds = {"sparsity": "a fraction between 0 and 1 (or a percentage)",
                 "group_size": "a positive integer or 'channel'"}
        raise ValueError(f"{where}: {value!r} is not {kinds.get(knob, 'an integer')}") from None
    limits = {"bits": (2, 8), "codebook": (1, 8), "group_size": (1, 1 << 20)}[knob]
    if not limits[0] <= number <= limits[1]:
        raise ValueError(f"{where}: {knob} {number} is outside {limits[0]}..{limits[1]}")
    return number


def parse_tries(tries: list[str]) -> list[Setting]:
    """The single settings named by ``--try KNOB=V1,V2,...`` texts (knobs: bits, group_size, codebook, sparsity).

    Every ``bits`` value is paired with every ``group_size`` (per channel when none is given).

    Raises:
        ValueError: an unknown knob, a knob given twice, a bad value, or ``group_size`` without ``bits``.
    """
    knobs: dict[str, list[int | float | None]] = {}
    for text in tries:
        knob, sep, rest = text.partition("=")
        knob = knob.strip()
        if not sep or knob not in TRY_KNOBS:
            raise ValueError(f"--try {text!r}: expected KNOB=V1,V2,... with KNOB one of {', '.join(TRY_KNOBS)}")
        if knob in knobs:
            raise ValueError(f"--try {knob} is given twice; list all its values in one --try")
        knobs[knob] = [_parse_value(knob, v, f"--try {text}") for v in _values(rest, knob)]
    if "group_size" in knobs and "bits" not in knobs:
        raise ValueError("--try group_size needs --try bits (the group size of an integer grid)")
    settings = [Setting(bits=int(b), group_size=None if g is None else int(g))  # type: ignore[arg-type]
                for b, g in itertools.product(knobs.get("bits", []), knobs.get("group_size", [None]))]
    settings += [Setting(codebook=int(c)) for c in knobs.get("codebook", [])]  # type: ignore[arg-type]
    settings += [Setting(sparsity=float(s)) for s in knobs.get("sparsity", [])]  # type: ignore[arg-type]
    if not settings:
        raise ValueError("give at least one --try (e.g. --try bits=4,8 --try sparsity=0.5)")
    return list(dict.fromkeys(settings))


def search_options(singles: list[Setting]) -> list[Setting]:
    """The settings the search may give a layer: every single one, plus each sparsity with each codebook."""
    sparsities = [s.sparsity for s in singles if s.sparsity is not None]
    codebooks = [s.codebook for s in singles if s.codebook is not None]
    pairs = [Setting(codebook=c, sparsity=s) for s in sparsities for c in codebooks]
    return list(dict.fromkeys([*singles, *pairs]))
