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
]
