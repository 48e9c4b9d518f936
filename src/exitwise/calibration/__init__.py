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
from exitwise.calibration.thresholds import (
    PerExitThresholds,
    SharedBaseline,
    max_probability_scores,
    per_exit_front,
    policy_scores,
    search_per_exit,
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
    "PerExitThresholds",
    "SharedBaseline",
    "max_probability_scores",
    "per_exit_front",
    "policy_scores",
    "search_per_exit",
]
