"""Markdown tables of the three results, and the comparison's files."""

from __future__ import annotations

from pathlib import Path

from exitwise.report import (
    comparison_markdown,
    efficiency_markdown,
    robustness_markdown,
    write_comparison,
)
from exitwise.results import ComparisonResult
from tests.report.factories import comparison_result, efficiency_result, robustness_result


def _rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of the table rows that start with ``first_cell``."""
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} ")
    ]


def test_efficiency_markdown() -> None:
    r = efficiency_result()
    r.policies["entropy"].default = r.policies["entropy"].sweep[4]
    text = efficiency_markdown(r)
    assert text.startswith("### BranchyResNet18 on synthetic-signs\n")
    assert "Trained 10 epochs in 8 min 32 s on cpu (2-core x86_64, 2 threads)." in text
    assert "on 2580 test images" in text
    assert "| exit | after | test accuracy | MFLOPs to reach | MMACs | % of backbone |" in text
    assert _rows(text, "0") == [["0", "layer1.1", "71.30%", "324.4", "162.2", "29.2%"]]
    assert _rows(text, "3")[0][2:] == ["98.53%", "1,135.4", "567.7", "102.2%"]
    assert "Plain backbone: 1,110.9 MFLOPs (555.4 MMACs) per image." in text
    assert _rows(text, "max_probability") == [
        ["max_probability", "0.98", "97.15%", "61.7%", "29% / 29% / 23% / 19%"]
    ]
    assert _rows(text, "entropy (default)")[0][1] == "0.8"
    assert _rows(text, "oracle")[0][:4] == ["oracle", "-", "99.34%", "40.9%"]


def test_robustness_markdown() -> None:
    text = robustness_markdown(robustness_result())
    header = "| disturbance | level | backbone accuracy | routed accuracy | FLOPs, % of backbone |"
    assert header in text
    assert ["Gaussian noise", "std 0.1", "73.9%", "72.6%", "71%"] in _rows(text, "Gaussian noise")
    assert len(_rows(text, "FGSM on the final exit")) == 3
    assert (
        "- slowdown eps 8/255: FLOPs 81% of the backbone, saving erased 62%, accuracy 93.7%; "
        "capped: FLOPs 51%, erased 18%, accuracy 87.1%"
    ) in text


def test_comparison_markdown() -> None:
    text = comparison_markdown(comparison_result())
    assert text.startswith("Reference: `resnet18` final exit, test 98.53% (validation 98.12%)")
    assert "1,110.9 MFLOPs per image = 100%" in text and "synthetic-signs, 2580 images" in text
    budget = _rows(text, "40%")
    assert budget[0] == [
        "40%", "branchy", "max_probability", "0.95", "95.10%", "-3.43 pt", "39.0%",
        "40% / 30% / 20% / 10%",
    ]  # fmt: skip
    assert budget[2] == ["40%", "eenets", "entropy", "-", "-", "-", "-", "no point within 40%"]
    assert "goal: within 0.5 points on test at <= 50% of the FLOPs" in text
    assert _rows(text, "branchy")[0][-1] == "not met"
    assert _rows(text, "eenets")[0][-2:] == ["no threshold within tolerance", "not met"]


def test_comparison_files(pages: dict[str, Path], tmp_path: Path) -> None:
    result = comparison_result()
    paths = write_comparison(result, tmp_path)
    assert [p.name for p in paths] == [
        "comparison.json", "comparison.md", "comparison.png", "comparison.html",
    ]  # fmt: skip
    assert ComparisonResult.load(paths[0]) == result
    assert paths[1].read_text() == comparison_markdown(result)
    html = pages["comparison"].read_text()
    assert "<td>95.10%</td>" in html and "<td>-3.43 pt</td>" in html and "not met" in html
    assert "no threshold within tolerance" in html
