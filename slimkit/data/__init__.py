"""Calibration and evaluation data: text corpora, image sets, tokenised windows, forward loops."""

from slimkit.data.loops import calibration_loop
from slimkit.data.spec import DataSpec, parse_data_spec

__all__ = ["DataSpec", "parse_data_spec", "calibration_loop"]
