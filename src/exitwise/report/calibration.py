"""The calibration section of the efficiency report (its
:class:`~exitwise.results.CalibrationSummary`): reliability diagrams, the ECE table (shared by the
page and the Markdown), CSV tables.

Temperatures are fitted by NLL on validation; ECE and NLL are measured on the test split (Guo et
al. 2017, "On Calibration of Modern Neural Networks"). Files, when the result has a calibration:

* ``reliability.png``: one panel per exit, confidence against accuracy before and after scaling,
  with the diagonal, and the images per bin below.
* ``calibration.csv`` (one row per exit), ``reliability.csv`` (one row per exit, scaling and bin).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from exitwise.report import figures as plot
from exitwise.report import format as fmt
from exitwise.report.pages import csv_bytes
from exitwise.results import CalibrationSummary, EfficiencyResult, ExitCalibration, ReliabilityBin

__all__ = [
    "AFTER",
    "BEFORE",
    "calibration_tables",
    "ece_header",
    "ece_rows",
    "reliability_figure",
]

BEFORE: dict[str, Any] = {"color": plot.POLICY_COLORS[1], "marker": "s", "ls": "--", "lw": 1.6}
AFTER: dict[str, Any] = {"color": plot.POLICY_COLORS[0], "marker": "o", "ls": "-", "lw": 2.0}
_MOST = 4  # panels per row


def ece_header(summary: CalibrationSummary) -> list[str]:
    """The ECE table's header: the global temperature is named in its column."""
    return [
        "Exit",
        "T (own)",
        "ECE before",
        "ECE after",
        f"ECE, global T = {fmt.number(summary.global_temperature)}",
        "NLL before",
        "NLL after",
        "Committee weight",
    ]


def ece_rows(summary: CalibrationSummary) -> list[list[str]]:
    """One row per exit, formatted: temperature, ECE (before, after, with the global T), NLL
    (before, after) and the committee's weight (the exit's validation accuracy)."""
    weights: Sequence[float | None] = summary.exit_weights
    return [
        [
            str(e.exit),
            fmt.number(e.temperature),
            fmt.pct(e.ece_before, 2),
            fmt.pct(e.ece_after, 2),
            fmt.pct(e.ece_global, 2),
            fmt.number(e.nll_before),
            fmt.number(e.nll_after),
            fmt.pct(weights[i] if i < len(weights) else None),
        ]
        for i, e in enumerate(summary.exits)
    ]


# ------------------------------------------------------------------------------------- figure


def _curve(ax: Axes, bins: Sequence[ReliabilityBin], style: dict[str, Any]) -> None:
    shown = [b for b in bins if b.count > 0]
    conf = [100.0 * b.confidence for b in shown]
    acc = [100.0 * b.accuracy for b in shown]
    ax.plot(conf, acc, ms=4.5, mec="white", mew=0.6, zorder=4, **style)


def _counts(ax: Axes, bins: Sequence[ReliabilityBin], style: dict[str, Any], side: int) -> None:
    """Images per bin as bars, the left (``side=0``) or right half of each bin."""
    shown = [b for b in bins if b.count > 0]  # a log axis has no place for 0
    width = np.array([50.0 * (b.upper - b.lower) for b in shown])
    left = np.array([100.0 * b.lower for b in shown]) + side * width
    counts = [b.count for b in shown]
    ax.bar(left, counts, width, align="edge", color=style["color"], alpha=0.85, lw=0)


def _draw_exit(top: Axes, bottom: Axes, e: ExitCalibration, block: str) -> None:
    top.plot([0, 100], [0, 100], color="#999999", ls=":", lw=1.2, zorder=1)
    _curve(top, e.reliability_before, BEFORE)
    _curve(top, e.reliability_after, AFTER)
    top.set(xlim=(0, 100), ylim=(0, 101))
    top.set_title(
        f"exit {e.exit} ({block}), T = {fmt.number(e.temperature)}\n"
        f"ECE {fmt.pct(e.ece_before)} → {fmt.pct(e.ece_after)}",
        fontsize=10.5,
    )
    top.tick_params(labelbottom=False)
    _counts(bottom, e.reliability_before, BEFORE, 0)
    _counts(bottom, e.reliability_after, AFTER, 1)
    bottom.set_yscale("log")
    bottom.set_ylim(bottom=0.5)  # a bin of one image still shows
    bottom.set_xlim(0, 100)
    bottom.set_xlabel("confidence (%)")
    bottom.grid(axis="x", visible=False)


def reliability_figure(r: EfficiencyResult) -> Figure | None:
    """Reliability diagrams, one panel per exit: accuracy against mean confidence per bin,
    before and after temperature scaling, the diagonal, and the images per bin (log scale)
    below; ``None`` without a calibration."""
    cal = r.calibration
    if cal is None or not cal.exits:
        return None
    nrows, ncols = plot.grid_shape(len(cal.exits), _MOST)
    fig, axes = plot.subplots(
        2 * nrows,
        ncols,
        (max(7.5, 3.3 * ncols), 4.4 * nrows + 0.9),
        height_ratios=[3, 1] * nrows,
    )
    blocks = {e.exit: e.block for e in r.exits}
    for k, e in enumerate(cal.exits):
        row, col = divmod(k, ncols)
        _draw_exit(axes[2 * row, col], axes[2 * row + 1, col], e, blocks.get(e.exit, "?"))
    for k in range(len(cal.exits), nrows * ncols):
        row, col = divmod(k, ncols)
        axes[2 * row, col].set_visible(False)
        axes[2 * row + 1, col].set_visible(False)
    for row in range(nrows):
        axes[2 * row, 0].set_ylabel("accuracy in the bin (%)")
        axes[2 * row + 1, 0].set_ylabel("images")
    keys = [
        plot.key("before scaling (T = 1)", **BEFORE),
        plot.key("after scaling (each exit's own T)", **AFTER),
        plot.key("perfect calibration", color="#999999", ls=":", lw=1.2),
    ]
    plot.legend_below(fig, keys, len(keys))
    fig.suptitle(
        f"Reliability on the {r.dataset.split} split ({cal.bins} equal-width bins; "
        f"temperatures fitted on {cal.fitted_on})",
        fontsize=12,
    )
    return fig


# -------------------------------------------------------------------------------------- tables


def calibration_tables(r: EfficiencyResult) -> dict[str, bytes]:
    """``calibration.csv`` and ``reliability.csv``; empty without a calibration."""
    cal = r.calibration
    if cal is None:
        return {}
    attrs = ["temperature", "ece_before", "ece_after", "ece_global", "nll_before", "nll_after"]
    weights = {i: w for i, w in enumerate(cal.exit_weights)}
    rows = [
        [e.exit, *(getattr(e, a) for a in attrs), cal.global_temperature, weights.get(i, "")]
        for i, e in enumerate(cal.exits)
    ]
    header = ["exit", *attrs, "global_temperature", "committee_weight"]
    bins = [
        [e.exit, when, k, b.lower, b.upper, b.count, b.confidence, b.accuracy]
        for e in cal.exits
        for when, diagram in (("before", e.reliability_before), ("after", e.reliability_after))
        for k, b in enumerate(diagram)
    ]
    bin_header = ["exit", "scaling", "bin", "lower", "upper", "count", "confidence", "accuracy"]
    return {
        "calibration.csv": csv_bytes(header, rows),
        "reliability.csv": csv_bytes(bin_header, bins),
    }
