"""LayerSequentialMethod: the one base of the one-shot methods that compress a transformer block by block
(GPTQ, AWQ, SparseGPT, Wanda).

Their lifecycle differs from the rest in one honest way: ``calibrate`` rewrites the weights. Each block
is calibrated on the inputs that the already-compressed blocks before it produce (the sequential
propagation of GPTQ and SparseGPT: later blocks see, and compensate, the errors of earlier ones), so the
statistics of block ``i`` only exist once blocks ``< i`` are compressed. Observing everything first and
rewriting in ``finalize`` would calibrate every block on float inputs instead. So the base owns the whole
lifecycle: ``calibrate`` runs :func:`~slimkit.calib.sequential.run_sequential` once and hands each block
to :meth:`compress_block` (by default :meth:`compress_linear` for each targeted Linear; AWQ adds its
block-level scale folding first); ``finalize`` bakes nothing and returns the statistics, or says that
the method was never given calibration data. A subclass writes the per-Linear math call and its
:meth:`summary`, nothing else.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar, TypeVar

from torch import nn

from slimkit.calib.sequential import LayerContext, run_sequential
from slimkit.calib.stats import InputStats
from slimkit.config import BaseConfig
from slimkit.method import ForwardLoop, Method, method_name
from slimkit.targets import Target

C = TypeVar("C", bound=BaseConfig)


class LayerSequentialMethod(Method[C]):
    """Compresses the targeted Linears of each transformer block during ``calibrate``, block after block."""

    #: Label of the progress bar and of calibration errors, e.g. ``"GPTQ"``.
    label: ClassVar[str]
    #: Whether each Linear's :class:`InputStats` include the Hessian ``XᵀX`` (Wanda needs only norms).
    with_hessian: ClassVar[bool] = True

    def __init__(self, config: C) -> None:
        super().__init__(config)
        self._stats: dict[str, Any] | None = None

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> None:
        """Compress ``model`` block by block on the batches ``forward_loop`` runs; the weights change here.

        Raises:
            RuntimeError: the method already compressed this model (a second pass would compress twice).
        """
        if self._stats is not None:
            raise RuntimeError(f"{self.name}: calibrate() already compressed the model; apply the method again "
                               "with a new slimkit.apply / slimkit.prepare instead")
        linears = run_sequential(model, forward_loop, self.config.targets, self.compress_block,
                                 with_hessian=self.with_hessian, description=self.label)
        self._stats = {"linears": linears, **self.summary()}

    def record_calibration(self, linears: int) -> None:
        """Mark the method as calibrated when another driver (the streamed runner, :mod:`slimkit.stream`) called
        :meth:`compress_block` for every block; ``linears`` is the number of Linears it compressed."""
        if self._stats is not None:
            raise RuntimeError(f"{self.name}: the model was already compressed")
        self._stats = {"linears": linears, **self.summary()}

    def resume_state(self) -> dict[str, Any]:
        """The running totals behind :meth:`summary` (numbers and lists of numbers), so a streamed run killed
        after some blocks can continue them exactly (:meth:`restore_state`); per-block scratch is left out."""
        return {k: v for k, v in vars(self).items() if k.startswith("_") and k != "_stats"
                and (isinstance(v, (int, float)) or (isinstance(v, list) and all(isinstance(x, (int, float))
                                                                                 for x in v)))}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue the totals :meth:`resume_state` returned after the blocks finished so far."""
        unknown = set(state) - set(self.resume_state())
        if unknown:
            raise ValueError(f"{self.name}: cannot restore unknown running totals {sorted(unknown)}")
        for key, value in state.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)

    def compress_block(self, ctx: LayerContext) -> None:
        """Compress one block: :meth:`compress_linear` for each of its targeted Linears, in module order."""
        for name, target in ctx.targets.items():
            self.compress_linear(target, ctx.stats[name])

    @abstractmethod
    def compress_linear(self, target: Target, stats: InputStats) -> None:
        """Rewrite ``target``'s weight in place from the statistics of the inputs it saw in its block."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """What the method measured over all blocks, for the report (besides ``linears``)."""

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        """Return the statistics of ``calibrate``; the weights were already rewritten there."""
        if self._stats is None:
            raise RuntimeError(f"{self.name} needs calibration: use slimkit.apply(model, config, forward_loop)")
        return self._stats

    @property
    def name(self) -> str:
        """The registered method name, e.g. ``quant.gptq``."""
        return method_name(type(self.config))
