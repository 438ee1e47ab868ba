"""Sequential calibration: walk a transformer one block at a time, collecting per-Linear input
statistics (Hessians, column norms, mean activations) for the one-shot calibrated methods, whose
shared base class (:class:`LayerSequentialMethod`) and Hessian helpers also live here."""

from slimkit.calib.layer_method import LayerSequentialMethod
from slimkit.calib.sequential import LayerContext, run_sequential
from slimkit.calib.stats import InputStats

__all__ = ["InputStats", "LayerContext", "LayerSequentialMethod", "run_sequential"]
