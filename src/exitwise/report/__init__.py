"""Report layer: typed results (:mod:`exitwise.results`) -> PNG figures, CSV tables, HTML pages,
Markdown tables.

Example:
    >>> from exitwise.report import write_report
    >>> result = EfficiencyResult.load("runs/r18/evaluation.json")  # doctest: +SKIP
    >>> write_report(result, "runs/r18")  # doctest: +SKIP
    PosixPath('runs/r18/report.html')
    >>> study = RiskResult.load("runs/r18/risk/risk.json")  # doctest: +SKIP
    >>> write_risk_report(study, "runs/r18/risk")  # doctest: +SKIP
    PosixPath('runs/r18/risk/risk.html')

Pages are Jinja2 templates (``report/templates/``: one base layout, macros, one template per
page) with autoescape on; figures are built with matplotlib's object API and embedded as data
URIs, so a page is one self-contained file. Every number goes through
:mod:`exitwise.report.format`. Everything is rendered in memory first and each file is written
atomically, the page last: a failure never leaves a half-written file nor a page without its
figures. A damaged result file is refused upstream, by ``from_json``.
"""

from __future__ import annotations

from exitwise.report.compare import comparison_figure, write_comparison
from exitwise.report.efficiency import write_report
from exitwise.report.markdown import (
    calibration_markdown,
    comparison_markdown,
    efficiency_markdown,
    operating_points_markdown,
    risk_markdown,
    robustness_markdown,
)
from exitwise.report.offload import offload_markdown, write_offload_report
from exitwise.report.risk import write_risk_report
from exitwise.report.robustness import write_robustness_report

__all__ = [
    "offload_markdown",
    "write_offload_report",
    "calibration_markdown",
    "comparison_figure",
    "comparison_markdown",
    "efficiency_markdown",
    "operating_points_markdown",
    "risk_markdown",
    "robustness_markdown",
    "write_comparison",
    "write_report",
    "write_risk_report",
    "write_robustness_report",
]
