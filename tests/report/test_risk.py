"""The risk-control report: risk.html, its figures and CSV tables, from a RiskResult."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from exitwise.report import format as fmt
from exitwise.report import risk, write_risk_report
from exitwise.results import RiskResult
from tests.report.factories import USER_EPSILON, read_csv, risk_result

FIGURES = {"risk_disagreement.png", "risk_gap.png", "risk_shift.png"}
TABLES = {"risk_fitted.csv", "risk_recalibrated.csv", "risk_evidence.csv", "risk_shift.csv"}


def _row(cells: list[str], left: int) -> str:
    """A table row as the page writes it: the first ``left`` cells left-aligned."""
    tds = [f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(cells)]
    return "<tr>" + "".join(tds) + "</tr>"


def _cell(value: str) -> float | None:
    return None if value == "" else float(value)


def test_fixture_round_trips() -> None:
    study = risk_result()
    assert RiskResult.from_json(study.to_json()) == study


def test_page_shows_the_numbers(pages: dict[str, Path]) -> None:
    html = pages["risk"].read_text(encoding="utf-8")
    study = risk_result()
    assert {p.name for p in pages["risk"].parent.iterdir()} == {"risk.html", *FIGURES, *TABLES}
    for fit in [*study.fitted, *study.recalibrated]:
        assert _row(risk.fit_cells(fit), left=3) in html
    worst = max(study.fitted, key=lambda f: (f.test_risk or 0.0) - f.epsilon)
    excess = fmt.points((worst.test_risk or 0.0) - worst.epsilon, 2)
    assert f"<td>no ({excess})</td>" in html and f"largest excess is <b>{excess}</b>" in html
    assert "<b>4 of 8</b> keep the test risk within ε" in html  # CRC over epsilon on test
    assert "<b>8 of 8</b> within ε" in html  # recalibrated on half of the test set
    assert "1 / 1 / 1 (none qualified)" in html
    assert "calibrated on validation (3,921 images), measured on test" in html
    for ev in study.evidence:
        assert f"<h3>{risk.evidence_title(ev)}</h3>" in html
        for row in ev.rows:
            assert _row(risk.evidence_cells(row, ev.delta), left=1) in html
    _, rows, setting = risk.shift_table(study)
    assert setting == f"disagreement risk, one shared threshold, ε = {fmt.pct_exact(USER_EPSILON)}"
    assert f"Setting: {setting}." in html
    for cells in rows:
        assert _row([c.replace(">", "&gt;") for c in cells], left=3) in html
    assert "<td>18.23% (&gt; ε)</td>" in html  # escaped, and flagged over epsilon
    assert "1%, 2%, 5%, 10%, 15%, 20%" in html and "δ = <b>10%</b>" in html
    assert "exitwise risk runs/r18 --epsilon 0.05" in html


def test_cells() -> None:
    study = risk_result()
    ltt = next(f for f in study.fitted if not f.qualified)
    assert risk.fit_cells(ltt) == [
        "LTT, δ = 10%", "gap", "per_exit", "5%", "1 / 1 / 1 (none qualified)", "0.00%", "0.00%",
        "yes", "102.2%", "98.53%",
    ]  # fmt: skip
    crc = study.fitted[2]
    assert risk.fit_cells(crc)[:1] + risk.fit_cells(crc)[5:8] == [
        "CRC", "4.70%", "6.16%", "no (+1.16 pt)",
    ]  # fmt: skip
    row = study.evidence[0].rows[2]
    assert risk.evidence_cells(row, 0.1) == [
        "5%", "4.65%", "3.55% – 5.70%", "70.5%", "3.5%", "3.60%", "75.5%", "66.5%",
    ]  # fmt: skip
    over = dataclasses.replace(row, crc_mean_risk=0.051, ltt_violation_rate=0.12)
    cells = risk.evidence_cells(over, 0.1)
    assert cells[1] == "5.10% (> ε)" and cells[4] == "12.0% (> δ)"
    assert risk.fit_header(study.fitted)[4] == "Thresholds, exit 0 / 1 / 2"


def test_shift_settings_fall_back_and_split() -> None:
    """Rows without a recorded epsilon use the study's; rows that differ get their own columns."""
    study = risk_result()
    study.shift = [dataclasses.replace(r, risk=None, rule=None, epsilon=None) for r in study.shift]
    header, rows, setting = risk.shift_table(study)
    assert setting == "- risk, rule -, ε = 5%" and "ε" not in header
    study.shift[0] = dataclasses.replace(study.shift[0], epsilon=0.1, risk="gap", rule="per_exit")
    header, rows, setting = risk.shift_table(study)
    assert setting == "" and header[3:6] == ["Risk", "Rule", "ε"]
    assert ["gap", "per_exit", "10%"] in [r[3:6] for r in rows]


def test_csv_tables_round_trip(pages: dict[str, Path]) -> None:
    out, study = pages["risk"].parent, risk_result()
    for name, fits in (
        ("risk_fitted.csv", study.fitted),
        ("risk_recalibrated.csv", study.recalibrated),
    ):
        rows = read_csv(out / name)
        assert len(rows) == len(fits)
        for row, fit in zip(rows, fits, strict=True):
            assert (row["method"], row["risk"], row["rule"]) == (fit.method, fit.risk, fit.rule)
            assert tuple(float(row[f"threshold_exit_{i}"]) for i in range(3)) == fit.thresholds
            for key in ("epsilon", "delta", "calib_risk", "test_risk", "test_flops_fraction"):
                assert _cell(row[key]) == getattr(fit, key)
            assert (
                row["qualified"] == str(fit.qualified)
                and int(row["calib_samples"]) == fit.calib_samples
            )
    rows = read_csv(out / "risk_evidence.csv")
    expected = [(ev, r) for ev in study.evidence for r in ev.rows]
    assert len(rows) == len(expected) == 4 * 6
    for row, (ev, r) in zip(rows, expected, strict=True):
        assert (row["risk"], row["rule"], float(row["delta"])) == (ev.risk, ev.rule, ev.delta)
        for f in dataclasses.fields(r):
            assert float(row[f.name]) == getattr(r, f.name)
    rows = read_csv(out / "risk_shift.csv")
    assert len(rows) == len(study.shift)
    for row in rows:
        assert float(row["epsilon"]) == USER_EPSILON and row["risk"] == "disagreement"
    assert [r["disturbance"] for r in rows[:6]] == ["gaussian_blur"] * 6


def test_minimal_study_draws_without_warnings(tmp_path: Path) -> None:
    """One risk, one rule, one epsilon, no shift and no recalibration: no shift figure, no such
    sections or tables, and nothing to warn about."""
    study = risk_result()
    study.evidence = [dataclasses.replace(study.evidence[0], rows=study.evidence[0].rows[2:3])]
    study.shift, study.recalibrated, study.command = [], [], None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        html = write_risk_report(study, tmp_path).read_text()
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"risk.html", "risk_disagreement.png", "risk_fitted.csv", "risk_evidence.csv"}
    for absent in ("Under distribution shift", "Recalibrated on", "Command:", "risk_gap.png"):
        assert absent not in html
