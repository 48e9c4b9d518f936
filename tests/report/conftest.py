"""Every report page written once per session from the typed fixtures (rendering takes ~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exitwise.report import write_comparison, write_report, write_robustness_report
from tests.report.factories import comparison_result, efficiency_result, robustness_result


@pytest.fixture(scope="session")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"report": .../report.html, "robustness": ..., "comparison": ...}``."""
    out = tmp_path_factory.mktemp("pages")
    return {
        "report": write_report(efficiency_result(), out / "efficiency"),
        "robustness": write_robustness_report(robustness_result(), out / "robustness"),
        "comparison": write_comparison(comparison_result(), out / "comparison")[-1],
    }
