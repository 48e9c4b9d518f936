"""Every report page written once per session from the typed fixtures (rendering takes ~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exitwise.report import (
    write_comparison,
    write_offload_report,
    write_report,
    write_risk_report,
    write_robustness_report,
)
from tests.report.factories import (
    calibrated_efficiency_result,
    comparison_result,
    efficiency_result,
    offload_result,
    risk_result,
    robustness_result,
)


@pytest.fixture(scope="session")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"report": .../report.html, "calibrated": .../report.html (with a calibration and the
    rules of issue 11), "robustness": ..., "comparison": ..., "risk": .../risk.html, "offload":
    .../offload.html}``."""
    out = tmp_path_factory.mktemp("pages")
    return {
        "report": write_report(efficiency_result(), out / "efficiency"),
        "robustness": write_robustness_report(robustness_result(), out / "robustness"),
        "comparison": write_comparison(comparison_result(), out / "comparison")[-1],
        "calibrated": write_report(calibrated_efficiency_result(), out / "calibrated"),
        "risk": write_risk_report(risk_result(), out / "risk"),
        "offload": write_offload_report(offload_result(), out / "offload")[-1],
    }
