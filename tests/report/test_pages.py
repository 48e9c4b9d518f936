"""What every page shares: self-contained files, escaping, atomic writes, no global state."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from matplotlib.image import imread

from exitwise import atomic
from exitwise.report import (
    compare,
    efficiency,
    risk,
    robustness,
    write_comparison,
    write_report,
    write_risk_report,
    write_robustness_report,
)
from exitwise.results import (
    ComparedPoint,
    ComparisonResult,
    EfficiencyResult,
    RiskResult,
    RobustnessResult,
)
from tests.report.factories import (
    calibrated_efficiency_result,
    comparison_result,
    efficiency_result,
    risk_result,
    robustness_result,
)

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script> & co"


FILES = {
    "report": {
        "report.html", "exits.csv", "exit_costs.png", "accuracy_vs_flops.png", "exit_shares.png",
        "training.png", "sweep_max_probability.csv", "pareto_max_probability.csv",
        "sweep_entropy.csv", "pareto_entropy.csv",
    },
    "robustness": {"robustness.html", "robustness.csv", "slowdown.csv", *robustness.FIGURES},
    "comparison": {"comparison.json", "comparison.md", "comparison.png", "comparison.html"},
    "calibrated": {
        "report.html", "exits.csv", "exit_costs.png", "accuracy_vs_flops.png", "exit_shares.png",
        "reliability.png", "training.png", "calibration.csv", "reliability.csv",
        *(f"{kind}_{name}.csv" for kind in ("sweep", "pareto")
          for name in ("max_probability", "entropy", "committee", "mean_ensemble", "patience",
                       "max_probability_per_exit")),
    },
    "risk": {
        "risk.html", "risk_disagreement.png", "risk_gap.png", "risk_shift.png", "risk_fitted.csv",
        "risk_recalibrated.csv", "risk_evidence.csv", "risk_shift.csv",
    },
}  # fmt: skip


@pytest.mark.parametrize("page", FILES)
def test_files_and_figures(pages: dict[str, Path], page: str) -> None:
    out = pages[page].parent
    assert {p.name for p in out.iterdir()} == FILES[page]  # and no temporary file
    for png in out.glob("*.png"):
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600


@pytest.mark.parametrize("page", FILES)
def test_page_is_self_contained(pages: dict[str, Path], page: str) -> None:
    html = pages[page].read_text(encoding="utf-8")
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    pngs = sorted(pages[page].parent.glob("*.png"))
    assert len(uris) == len(pngs) >= 1
    assert {base64.b64decode(u) for u in uris} == {p.read_bytes() for p in pngs}
    assert all(p.read_bytes().startswith(PNG) for p in pngs)
    for marker in ("http://", "https://", "@import", "<link", "<script", "url("):
        assert marker not in html
    assert len(re.findall(r"\bsrc=", html)) == len(pngs)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count("<style>") == 1 and "<footer>" in html  # the one base layout


def _hostile_efficiency() -> EfficiencyResult:
    r = efficiency_result(title=HOSTILE)
    r.policies["<b>bold</b>"] = r.policies.pop("entropy")
    r.exits[0] = dataclasses.replace(r.exits[0], block="layer<1>")
    r.command = 'exitwise run --name "<i>"'
    r.notes = ['<img src="http://evil/x.png">']
    return r


def _hostile_robustness() -> RobustnessResult:
    r = robustness_result(title=HOSTILE)
    r.command = 'exitwise robustness --name "<i>"'
    r.config = dataclasses.replace(r.config, policy="<b>bold</b>")
    return r


def _hostile_calibrated() -> EfficiencyResult:
    r = calibrated_efficiency_result(title=HOSTILE)
    r.policies["<b>bold</b>"] = r.policies.pop("max_probability_per_exit")
    r.policies["<b>bold</b>"].label = "<i>per exit</i>"
    r.exits[1] = dataclasses.replace(r.exits[1], block="<script>")
    return r


def _hostile_risk() -> RiskResult:
    study = risk_result(title=HOSTILE)
    study.command = 'exitwise risk --name "<i>"'
    study.fitted[0] = dataclasses.replace(study.fitted[0], calibrated_on="<b>bold</b>")
    study.shift = [dataclasses.replace(r, disturbance="<b>bold</b>") for r in study.shift]
    return study


def _hostile_comparison() -> ComparisonResult:
    c = comparison_result()
    c.runs = {HOSTILE: c.runs["branchy"], "eenets": c.runs["eenets"]}
    c.at_budget = [ComparedPoint(HOSTILE, "<b>bold</b>", None, 0.4, note="<i>none</i>")]
    return c


@pytest.mark.parametrize(
    ("write", "make"),
    [
        (write_report, _hostile_efficiency),
        (write_robustness_report, _hostile_robustness),
        (lambda c, out: write_comparison(c, out)[-1], _hostile_comparison),
        (write_report, _hostile_calibrated),
        (write_risk_report, _hostile_risk),
    ],
    ids=["report", "robustness", "comparison", "calibrated", "risk"],
)
def test_strings_from_results_are_escaped(write, make, tmp_path: Path) -> None:
    html = write(make(), tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in html and "<b>bold</b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert '<img src="http' not in html


def test_hostile_policy_name_makes_a_safe_file_name(tmp_path: Path) -> None:
    write_report(_hostile_efficiency(), tmp_path)
    assert (tmp_path / "sweep__b_bold__b_.csv").is_file()


# ------------------------------------------------------------------------------------ atomicity


def _boom(*_args: object) -> None:
    raise RuntimeError("plotting failed")


@pytest.mark.parametrize(
    ("module", "builder", "write", "make"),
    [
        (efficiency, "exit_shares_figure", write_report, efficiency_result),
        (robustness, "slowdown_figure", write_robustness_report, robustness_result),
        (compare, "comparison_figure", write_comparison, comparison_result),
        (efficiency, "reliability_figure", write_report, calibrated_efficiency_result),
        (risk, "shift_figure", write_risk_report, risk_result),
    ],
    ids=["report", "robustness", "comparison", "calibrated", "risk"],
)
def test_figure_failure_writes_nothing(
    module, builder, write, make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = b"<!DOCTYPE html><title>previous run</title>"
    (tmp_path / "old.html").write_bytes(previous)
    monkeypatch.setattr(module, builder, _boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write(make(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["old.html"]  # no page, no half-written file


def test_failed_rename_keeps_previous_page_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = b"<!DOCTYPE html><title>previous run</title>"
    (tmp_path / "report.html").write_bytes(previous)
    real = os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).endswith(".html"):
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(efficiency_result(), tmp_path)
    assert (tmp_path / "report.html").read_bytes() == previous
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    assert (tmp_path / "exits.csv").is_file()  # figures and tables land before the page


@pytest.mark.parametrize(
    ("write", "make", "page", "files"),
    [
        (write_robustness_report, robustness_result, "robustness.html", 7),
        (write_risk_report, risk_result, "risk.html", 8),
    ],
    ids=["robustness", "risk"],
)
def test_page_is_written_last(
    write, make, page: str, files: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda s, d: (order.append(Path(d).name), real(s, d)))
    write(make(), tmp_path)
    assert order[-1] == page and len(order) == files


def test_rendering_is_quiet_and_leaves_the_result_alone(tmp_path: Path) -> None:
    result = efficiency_result()
    before = result.to_json()
    out = StringIO()
    with warnings.catch_warnings(), redirect_stdout(out), redirect_stderr(out):
        warnings.simplefilter("error")
        write_report(result, tmp_path)
    assert out.getvalue() == "" and result.to_json() == before


# ------------------------------------------------------------------------------ global state

_BACKEND_CHECK = """
import sys, matplotlib
matplotlib.use("svg")
before = matplotlib.get_backend()
import exitwise.report
from tests.report.factories import efficiency_result
exitwise.report.write_report(efficiency_result(), sys.argv[1])
assert matplotlib.get_backend() == before == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
"""


def test_no_process_wide_backend_switch(tmp_path: Path) -> None:
    """Importing exitwise.report (and rendering) selects no backend and never imports pyplot."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _BACKEND_CHECK, str(tmp_path)],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
