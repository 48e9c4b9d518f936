"""Calibration on validation outputs (floor 4): temperatures, per-exit thresholds, CRC / LTT."""

from exitwise.calibration.risk import (
    EpsilonEvidence,
    MethodEvidence,
    RiskControlledThresholds,
    RiskEvidence,
    fit_crc,
    fit_ltt,
    loss_matrix,
    quantile_path,
    risk_evidence,
)
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
    "EpsilonEvidence",
    "MethodEvidence",
    "RiskControlledThresholds",
    "RiskEvidence",
    "fit_crc",
    "fit_ltt",
    "loss_matrix",
    "quantile_path",
    "risk_evidence",
    "ConfidenceBin",
    "Reliability",
    "expected_calibration_error",
    "fit_global_temperature",
    "fit_temperature",
    "fit_temperatures",
    "reliability",
]
