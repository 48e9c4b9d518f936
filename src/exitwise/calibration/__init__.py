"""Calibration on validation outputs (floor 4): temperatures, per-exit thresholds, CRC / LTT."""

from exitwise.calibration.temperature import (
    ConfidenceBin,
    Reliability,
    expected_calibration_error,
    fit_global_temperature,
    fit_temperature,
    fit_temperatures,
    reliability,
)

__all__ = [
    "ConfidenceBin",
    "Reliability",
    "expected_calibration_error",
    "fit_global_temperature",
    "fit_temperature",
    "fit_temperatures",
    "reliability",
]
