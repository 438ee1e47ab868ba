"""Small models saved once in every storage form of the slimkit format, for the on-disk compatibility test.

Each case builds the same deterministic model and applies methods through the public API only, so the
very same builder runs on an older slimkit: ``tests/export/data/format_v1/CASE`` holds what slimkit
wrote for these cases at commit 841b2a6 (before the codec and module-restorer registries), produced
with ``python -m tests.export._format_cases OUT_DIR`` in a worktree of that commit. The test in
``test_format_compat.py`` checks that today's slimkit writes the same bytes and loads those files back
bit-exactly.

Cases: ``codecs`` (dense, alias of a tied weight, int4 affine g16 and int8 symmetric per-channel
``int`` entries, a 60%-pruned ``bitmask`` entry), ``packed`` (int4 layers packed with the dequant
kernel in bf16: a ``packed`` header section), ``static`` (W8A8 StaticQuantLinears carrying activation
parameters as buffers) and ``smoothquant`` (the same with per-channel ``input_smooth``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import slimkit
from slimkit.models.bundle import ModelBundle


class TinyTied(nn.Module):
    """Four Linears and one weight shared by two of them (stored once, as an alias)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(24, 64)
        self.tied = nn.Linear(24, 64, bias=False)
        self.tied.weight = self.inp.weight
        self.hidden = nn.Linear(64, 64)
        self.sparse = nn.Linear(64, 64)
        self.out = nn.Linear(64, 32)

    def forward(self, x: Tensor) -> Tensor:  # (B, 24) -> (B, 32)
        h = torch.relu(self.inp(x)) + self.tied(x)
        h = torch.relu(self.hidden(h))
        return self.out(torch.relu(self.sparse(h)))


def inputs() -> Tensor:
    """Calibration and comparison inputs (8, 24), the same on every run."""
    return torch.randn(8, 24, generator=torch.Generator().manual_seed(1)) * 2


def _model() -> TinyTied:
    torch.manual_seed(0)
    return TinyTied().eval()


def _codecs(model: nn.Module) -> None:
    slimkit.apply(model, slimkit.RTNConfig(bits=4, symmetric=False, granularity="group", group_size=16,
                                           targets={"include": ["hidden.weight"]}))
    slimkit.apply(model, slimkit.RTNConfig(bits=8, granularity="channel", group_size=None,
                                           targets={"include": ["out.weight"]}))
    slimkit.apply(model, slimkit.MagnitudePruneConfig(sparsity=0.6, targets={"include": ["sparse.weight"]}))


def _packed(model: nn.Module) -> None:
    slimkit.apply(model, slimkit.RTNConfig(bits=4, granularity="group", group_size=16,
                                           targets={"include": ["hidden.weight", "out.weight"]}))
    slimkit.apply(model, slimkit.PackConfig(kernel="dequant", activation_dtype="bfloat16",
                                            targets={"include": ["hidden.weight", "out.weight"]}))


def _static(model: nn.Module) -> None:
    targets = {"include": ["hidden.weight", "sparse.weight", "out.weight"]}
    slimkit.apply(model, slimkit.StaticQuantConfig(targets=targets), lambda m: m(inputs()))


def _smoothquant(model: nn.Module) -> None:
    targets = {"include": ["hidden.weight", "out.weight"]}
    slimkit.apply(model, slimkit.SmoothQuantConfig(smooth_unfoldable=True, targets=targets), lambda m: m(inputs()))


CASES: dict[str, Callable[[nn.Module], None]] = {
    "codecs": _codecs, "packed": _packed, "static": _static, "smoothquant": _smoothquant}


def build_case(name: str) -> ModelBundle:
    """The bundle of case ``name``: a fresh :class:`TinyTied` with that case's methods applied."""
    model = _model()
    CASES[name](model)
    return ModelBundle(model, "torch", f"format-case-{name}", applied=[{"case": name}])


def main(out: Path) -> None:
    """Save every case under ``out/CASE`` with the slimkit that is imported."""
    from slimkit.export.slimkit_format import save

    for name in CASES:
        save(build_case(name), out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
