"""Markdown tables of the results, and the comparison's files."""

from __future__ import annotations

from pathlib import Path

from exitwise.report import (
    calibration_markdown,
    comparison_markdown,
    efficiency_markdown,
    operating_points_markdown,
    risk,
    risk_markdown,
    robustness_markdown,
    write_comparison,
)
from exitwise.results import ComparisonResult
from tests.report.factories import (
    calibrated_efficiency_result,
    comparison_result,
    efficiency_result,
    risk_result,
    robustness_result,
)


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
    mp_rows = _rows(text, "max_probability")
    assert mp_rows[0] == ["max_probability", "0.98", "97.15%", "61.7%", "29% / 29% / 23% / 19%"]
    # the chosen point against the final exit and the oracle's mean FLOPs
    chosen = r.policies["max_probability"].chosen
    assert chosen is not None
    ratio = chosen.mean_flops / r.oracle.mean_flops
    delta = 100 * (chosen.accuracy - r.exits[-1].accuracy)
    assert mp_rows[1] == ["max_probability", f"{delta:+.1f} pt", f"{ratio:.2f}x"]
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


def test_calibration_markdown() -> None:
    r = calibrated_efficiency_result()
    text = calibration_markdown(r)
    assert text.startswith("Temperature scaling, fitted by NLL on validation; ECE (15 equal-width")
    header = (
        "| Exit | T (own) | ECE before | ECE after | ECE, global T = 1.31 | NLL before | NLL after"
    )
    assert header in text
    assert _rows(text, "0") == [["0", "1.62", "8.12%", "1.87%", "3.91%", "1.12", "0.987", "70.2%"]]
    assert _rows(text, "3")[0][5:7] == ["0.0712", "0.0664"]
    assert calibration_markdown(efficiency_result()) == ""
    assert text in efficiency_markdown(r)
    assert "Temperature scaling" not in efficiency_markdown(efficiency_result())


def test_efficiency_markdown_with_the_new_rules() -> None:
    text = efficiency_markdown(calibrated_efficiency_result())
    assert (
        "| policy | threshold (chosen on validation) | per-exit thresholds | test accuracy |"
        in text
    )
    assert _rows(text, "max_probability")[0][:3] == ["max_probability", "0.98", "-"]
    assert _rows(text, "committee")[0] == [
        "committee", "0.95", "-", "96.40%", "52.7%", "45% / 26% / 17% / 12%"
    ]  # fmt: skip
    assert _rows(text, "patience (picked on test)")[0][:4] == [
        "patience (picked on test)", "patience 4", "-", "98.53%",
    ]  # fmt: skip
    assert _rows(text, "max_probability_per_exit")[0][:4] == [
        "max_probability_per_exit", "accuracy target 0.985", "0.994 / 0.9775 / 0.955", "97.90%",
    ]  # fmt: skip
    assert _rows(text, "mean_ensemble (picked on test)")[0][1] == "0.995"
    assert _rows(text, "oracle")[0][:3] == ["oracle", "-", "-"]


def test_risk_markdown() -> None:
    study = risk_result()
    text = risk_markdown(study)
    assert text.startswith("### BranchyResNet18 on synthetic-signs: risk control\n")
    assert "Target risk ε 1%, 2%, 5%, 10%, 15%, 20%; LTT's δ = 10%;" in text
    assert "**Fitted rules** (calibrated on validation (3,921 images), measured on test):" in text
    crc = [r for r in _rows(text, "CRC") if r[1:3] == ["gap", "shared"]]
    assert crc[0] == [
        "CRC", "gap", "shared", "5%", "0.93 / 0.93 / 0.93", "4.70%", "6.16%", "no (+1.16 pt)",
        "52.0%", "93.60%",
    ]  # fmt: skip
    assert crc[1][6:8] == ["4.46%", "yes"]  # recalibrated on half of the test set
    assert _rows(text, "LTT, δ = 10%")[3][4] == "1 / 1 / 1 (none qualified)"
    for ev in study.evidence:
        assert f"**Evidence**, {risk.evidence_title(ev)}:" in text
    assert _rows(text, "5%")[0] == [
        "5%", "4.65%", "3.55% – 5.70%", "70.5%", "3.5%", "3.60%", "75.5%", "66.5%",
    ]  # fmt: skip
    assert "**Under distribution shift** (disagreement risk, one shared threshold, ε = 5%):" in text
    assert _rows(text, "Gaussian blur")[-1] == [
        "Gaussian blur", "sigma 1.5", "LTT", "14.58% (> ε)", "49.0%", "3.68%", "88.0%", "81.67%",
    ]  # fmt: skip
    bare = risk_result()
    bare.shift, bare.recalibrated, bare.evidence = [], [], []
    text = risk_markdown(bare)
    assert "Recalibrated" not in text and "Evidence" not in text and "shift" not in text


def test_operating_points_at_given_thresholds() -> None:
    r = efficiency_result()
    t = r.policies["max_probability"].sweep[3].threshold
    p = r.policies["max_probability"].sweep[3]
    text = operating_points_markdown(r, [t])
    assert "| policy | threshold | test accuracy | left at a side exit | mean FLOPs, % |" in text
    row = _rows(text, "max_probability")[0]
    assert row[2:] == [
        f"{100 * p.accuracy:.2f}%",
        f"{100 * (1 - p.exit_shares[-1]):.1f}%",
        f"{100 * p.flops_fraction:.1f}%",
    ]
    assert _rows(operating_points_markdown(r, [12345.0]), "max_probability") == []
