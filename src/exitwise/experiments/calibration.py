"""Calibration of a run's exits (issue 11, floor 5): temperatures fitted by NLL on validation,
ECE and reliability diagrams on test before and after, and the context every rule is built in.

Seed 002 (Pacheco et al.) calibrates its exits by temperature scaling before deciding with an
accuracy-weighted committee; here the temperatures and the committee's weights come from the
validation split only, and the test split only measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from exitwise.calibration.temperature import (
    Reliability,
    expected_calibration_error,
    fit_global_temperature,
    fit_temperatures,
    reliability,
)
from exitwise.outputs import ExitOutput, exit_accuracies
from exitwise.policies import PolicyContext
from exitwise.results import (
    CalibrationSummary,
    EfficiencyResult,
    ExitCalibration,
    ReliabilityBin,
)

__all__ = [
    "calibrate_exits",
    "policy_context",
    "saved_calibration",
    "run_policy_context",
    "BINS",
]

BINS = 15
"""Equal-width confidence bins of the ECE, as seed 002's code uses."""


def _bins(diagram: Reliability) -> list[ReliabilityBin]:
    return [
        ReliabilityBin(b.lower, b.upper, b.count, b.confidence, b.accuracy) for b in diagram.bins
    ]


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels))


def calibrate_exits(
    val_outputs: Sequence[ExitOutput],
    val_labels: torch.Tensor,
    test_outputs: Sequence[ExitOutput],
    test_labels: torch.Tensor,
) -> CalibrationSummary:
    """Fit one temperature per exit and one global temperature on validation; measure ECE, NLL
    and reliability on test before and after (one reliability diagram gives both its ECE and
    its bins)."""
    temps = fit_temperatures(val_outputs, val_labels)
    t_global = fit_global_temperature(val_outputs, val_labels)
    exits = []
    for i, (out, t) in enumerate(zip(test_outputs, temps, strict=True)):
        logits = out.logits
        before = reliability(logits, test_labels, 1.0, bins=BINS)
        after = reliability(logits, test_labels, t, bins=BINS)
        exits.append(
            ExitCalibration(
                exit=i,
                temperature=t,
                ece_before=before.ece,
                ece_after=after.ece,
                ece_global=expected_calibration_error(logits, test_labels, t_global, bins=BINS),
                nll_before=_nll(logits, test_labels, 1.0),
                nll_after=_nll(logits, test_labels, t),
                reliability_before=_bins(before),
                reliability_after=_bins(after),
            )
        )
    return CalibrationSummary(
        temperatures=list(temps),
        global_temperature=t_global,
        exits=exits,
        exit_weights=exit_accuracies(val_outputs, val_labels),
        bins=BINS,
    )


def policy_context(calibration: CalibrationSummary | None) -> PolicyContext:
    """The context every rule of a run is built in: its temperatures and committee weights."""
    if calibration is None:
        return PolicyContext()
    return PolicyContext(
        temperature=tuple(calibration.temperatures),
        exit_weights=tuple(calibration.exit_weights),
    )


def saved_calibration(run_dir: str | Path, num_exits: int) -> CalibrationSummary | None:
    """The calibration ``exitwise evaluate`` stored with a run (in its evaluation.json), if it
    has one for ``num_exits`` exits."""
    path = Path(run_dir) / "evaluation.json"
    if not path.exists():
        return None
    cal = EfficiencyResult.load(path).calibration
    return cal if cal is not None and len(cal.temperatures) == num_exits else None


def run_policy_context(
    run_dir: str | Path,
    num_exits: int,
    val_outputs: Callable[[], tuple[Sequence[ExitOutput], torch.Tensor]],
) -> PolicyContext:
    """The rules' context for a saved run: the temperatures and committee weights
    ``exitwise evaluate`` stored with it, else fitted now on the validation split
    (``val_outputs()`` gives its outputs and labels; called only then)."""
    saved = saved_calibration(run_dir, num_exits)
    if saved is not None:
        return policy_context(saved)
    outputs, labels = val_outputs()
    return PolicyContext(
        temperature=tuple(fit_temperatures(outputs, labels)),
        exit_weights=tuple(exit_accuracies(outputs, labels)),
    )
