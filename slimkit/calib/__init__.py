"""Sequential calibration: walk a transformer one block at a time, collecting per-Linear input
statistics (Hessians, column norms, mean activations) for the one-shot calibrated methods."""

from slimkit.calib.sequential import LayerContext, run_sequential
from slimkit.calib.stats import InputStats

__all__ = ["InputStats", "LayerContext", "run_sequential"]
