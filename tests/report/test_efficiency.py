"""The efficiency report: report.html, its figures and CSV tables, from an EfficiencyResult."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from exitwise.report import efficiency, figures, write_report
from exitwise.report import format as fmt
from exitwise.results import ComparisonResult, EfficiencyResult, PolicyResult, RobustnessResult
from exitwise.routing import pareto_front
from tests.report.factories import (
    GLOBAL_TEMPERATURE,
    calibrated_efficiency_result,
    comparison_result,
    efficiency_result,
    policy,
    read_csv,
    robustness_result,
    routed_point,
)


@pytest.mark.parametrize(
    ("cls", "make"),
    [
        (EfficiencyResult, efficiency_result),
        (EfficiencyResult, calibrated_efficiency_result),
        (RobustnessResult, robustness_result),
        (ComparisonResult, comparison_result),
    ],
)
def test_fixtures_round_trip(cls, make) -> None:
    """The fixtures are valid results: to_json -> from_json gives them back."""
    result = make()
    assert cls.from_json(result.to_json()) == result


def test_page_shows_the_numbers(pages: dict[str, Path]) -> None:
    html = pages["report"].read_text(encoding="utf-8")
    r = efficiency_result()
    chosen = r.policies["max_probability"].chosen
    assert chosen is not None
    assert f"t = {fmt.threshold(chosen.threshold)}" in html and "t = 0.98" in html
    assert f"<b>{fmt.pct(chosen.accuracy)}</b>" in html  # 97.1%
    assert f"<b>{fmt.pct(chosen.flops_fraction, 0)}</b> of the backbone" in html  # 62%
    assert fmt.pct(chosen.val_accuracy) in html and chosen.rule in html
    for e in r.exits:
        assert fmt.pct(e.accuracy) in html and fmt.pct(e.path_fraction) in html
    assert "<b>1,110.9 MFLOPs</b> (555.4 MMACs) per image" in html
    assert "To reach (MFLOPs)" in html and ">324.4<" in html  # one unit for the whole table
    assert "8 min 32 s" in html and "2-core x86_64" in html
    assert "Synthetic data: numbers are illustrative." in html
    assert "exitwise run configs/branchy_resnet18.yaml --out runs/r18" in html
    assert '<tr class="hl">' in html  # the chosen point highlighted
    assert "<h3>max_probability</h3>" in html and "<h3>entropy</h3>" in html
    # entropy has no chosen point: summarised by its cheapest point within 0.5 points
    point, reason = efficiency.headline_point(r.policies["entropy"], r.backbone.accuracy)
    assert reason.startswith("cheapest") and f"t = {fmt.threshold(point.threshold)}" in html


def test_csv_tables_round_trip(pages: dict[str, Path]) -> None:
    out, r = pages["report"].parent, efficiency_result()
    rows = read_csv(out / "exits.csv")
    assert list(rows[0]) == [
        "exit",
        "block",
        "accuracy",
        "path_flops",
        "path_macs",
        "path_fraction",
    ]
    for row, e, macs in zip(rows, r.exits, r.costs.path_macs, strict=True):
        assert (int(row["exit"]), row["block"], float(row["accuracy"])) == (
            e.exit,
            e.block,
            e.accuracy,
        )
        assert int(row["path_flops"]) == e.path_flops and int(row["path_macs"]) == macs
    for name, pol in r.policies.items():
        for kind in ("sweep", "pareto"):
            rows, points = read_csv(out / f"{kind}_{name}.csv"), getattr(pol, kind)
            assert len(rows) == len(points)
            for row, p in zip(rows, points, strict=True):
                for key in ("threshold", "accuracy", "mean_flops", "mean_macs", "flops_fraction"):
                    assert float(row[key]) == getattr(p, key)
                assert tuple(float(row[f"share_exit_{i}"]) for i in range(4)) == p.exit_shares


def test_minimal_result(tmp_path: Path) -> None:
    """No training, no chosen point, no command or notes: no training figure, and no mention."""
    r = efficiency_result()
    r.training, r.command, r.notes = None, None, []
    for pol in r.policies.values():
        pol.chosen = None
    html = write_report(r, tmp_path).read_text()
    assert not (tmp_path / "training.png").exists() and (tmp_path / "exit_shares.png").exists()
    for absent in ("<h2>Training</h2>", "<h2>Notes</h2>", "Command:", 'class="hl"'):
        assert absent not in html


def test_headline_point_prefers_the_chosen_point() -> None:
    r = efficiency_result()
    ref = r.backbone.accuracy
    assert efficiency.headline_point(r.policies["max_probability"], ref) == (
        r.policies["max_probability"].chosen,
        "chosen",
    )
    entropy = r.policies["entropy"]
    point, _ = efficiency.headline_point(entropy, ref)
    near = [p for p in entropy.sweep if p.accuracy >= ref - efficiency.TOLERANCE]
    assert point == min(near, key=lambda p: p.mean_flops)
    point, reason = efficiency.headline_point(entropy, 1.0)  # nothing near: the most accurate
    assert reason == "most accurate sweep point"
    assert point.accuracy == max(p.accuracy for p in entropy.sweep)


def test_degenerate_sweeps_draw_without_warnings(tmp_path: Path) -> None:
    """A policy with one sweep point, and an uneven grid with thresholds past 1."""
    r = efficiency_result()
    lone = r.policies["entropy"].sweep[4]
    grid = policy("t", [0.0, 0.5, 0.99, 0.9999, 1.0, 1.01], [0.0, 0.1, 0.6, 0.9, 1.0, 1.0])
    odd = dataclasses.replace(grid, sweep=[lone], pareto=pareto_front([lone]))
    r.policies = {"max prob/odd": odd, "grid": grid}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(r, tmp_path)
    assert {"sweep_max_prob_odd.csv", "pareto_max_prob_odd.csv", "sweep_grid.csv"} <= {
        p.name for p in tmp_path.iterdir()
    }


# ------------------------------------------------------------------ calibration and new rules


def test_calibration_section(pages: dict[str, Path]) -> None:
    html = pages["calibrated"].read_text(encoding="utf-8")
    r = calibrated_efficiency_result()
    cal = r.calibration
    assert cal is not None
    assert "<h2>Calibration</h2>" in html and 'id="reliability"' in html
    assert f"<th>ECE, global T = {fmt.number(GLOBAL_TEMPERATURE)}</th>" in html
    for e, w in zip(cal.exits, cal.exit_weights, strict=True):
        cells = [fmt.number(e.temperature), fmt.pct(e.ece_before, 2), fmt.pct(e.ece_after, 2),
                 fmt.pct(e.ece_global, 2), fmt.number(e.nll_before), fmt.number(e.nll_after),
                 fmt.pct(w)]  # fmt: skip
        assert f'<tr><td class="l">{e.exit}</td>' + "".join(f"<td>{c}</td>" for c in cells) in html
    before = " / ".join(fmt.pct(e.ece_before) for e in cal.exits)
    after = " / ".join(fmt.pct(e.ece_after) for e in cal.exits)
    assert f"{before} → <b>{after}</b>" in html  # the headline
    out = pages["calibrated"].parent
    rows = read_csv(out / "calibration.csv")
    for row, e in zip(rows, cal.exits, strict=True):
        for key in ("temperature", "ece_before", "ece_after", "ece_global", "nll_before"):
            assert float(row[key]) == getattr(e, key)
        assert float(row["global_temperature"]) == GLOBAL_TEMPERATURE
    bins = read_csv(out / "reliability.csv")
    assert len(bins) == len(cal.exits) * 2 * cal.bins
    first = cal.exits[0].reliability_after[3]
    row = next(b for b in bins if (b["exit"], b["scaling"], b["bin"]) == ("0", "after", "3"))
    assert (int(row["count"]), float(row["confidence"])) == (first.count, first.confidence)


def test_no_calibration_no_section(pages: dict[str, Path]) -> None:
    html = pages["report"].read_text(encoding="utf-8")
    assert "<h2>Calibration</h2>" not in html and "Temperature scaling" not in html
    assert not (pages["report"].parent / "reliability.png").exists()


def test_new_rules_in_the_tables(pages: dict[str, Path]) -> None:
    html = pages["calibrated"].read_text(encoding="utf-8")
    r = calibrated_efficiency_result()
    for name in ("committee", "mean_ensemble", "patience", "max_probability_per_exit"):
        assert f"<h3>{name}</h3>" in html
    assert (
        '<th class="l">Patience t</th>' in html and '<th class="l">Accuracy target t</th>' in html
    )
    assert "<th>Thresholds, exit 0 / 1 / 2</th>" in html
    per_exit = r.policies["max_probability_per_exit"]
    for p in per_exit.pareto:
        cells = f'<td class="l">{fmt.threshold(p.threshold)}</td>'
        assert cells + f"<td>{fmt.thresholds(p.thresholds)}</td>" in html
    chosen = per_exit.chosen
    assert chosen is not None and chosen.thresholds is not None
    assert f"(thresholds per side exit {fmt.thresholds(chosen.thresholds)})" in html
    assert '<td class="l">4</td>' in html  # an integer patience, not "4.0"
    rows = read_csv(pages["calibrated"].parent / "sweep_max_probability_per_exit.csv")
    for row, p in zip(rows, per_exit.sweep, strict=True):
        assert tuple(float(row[f"threshold_exit_{i}"]) for i in range(3)) == p.thresholds
    assert "threshold_exit_0" not in (pages["calibrated"].parent / "sweep_patience.csv").read_text()


def test_parameter_names() -> None:
    r = calibrated_efficiency_result()
    assert efficiency.parameter_header("max_probability", r.policies["max_probability"]) == (
        "Threshold t"
    )
    assert efficiency.parameter_header("patience", r.policies["patience"]) == "Patience t"
    unnamed = dataclasses.replace(r.policies["patience"], parameter=None)
    assert efficiency.parameter_name("patience", unnamed) == "patience"
    per_exit = dataclasses.replace(r.policies["max_probability_per_exit"], parameter=None)
    assert efficiency.parameter_name("max_probability_per_exit", per_exit) == "target"
    assert efficiency.per_exit(per_exit) and not efficiency.per_exit(r.policies["committee"])


def test_many_rules_draw_without_warnings(tmp_path: Path) -> None:
    """Ten rules (more than the palette's eight), one with a single point, one with none, an
    integer grid with an empty Pareto front: every figure draws, quietly; the empty rule is
    named."""
    r = calibrated_efficiency_result()
    r.policies["learned_confidence"] = policy("learned >= t", [0.2, 0.5, 0.8], [0.1, 0.5, 0.9])
    lone = r.policies["entropy"].sweep[4]
    r.policies["lone"] = dataclasses.replace(r.policies["entropy"], sweep=[lone], pareto=[lone])
    r.policies["empty"] = PolicyResult("no point", [], [])
    r.policies["steps"] = PolicyResult(
        "integers", [routed_point(2.0, (0, 1, 0, 0), 0.9), routed_point(5.0, (0, 0, 0, 1), 0.98)],
        [], parameter="patience",
    )  # fmt: skip
    assert len(r.policies) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        html = write_report(r, tmp_path).read_text()
    assert "No sweep point: empty." in html and "<h3>empty</h3>" not in html
    assert (tmp_path / "sweep_empty.csv").read_text().startswith("threshold,")
    colors = {figures.policy_style(i) for i in range(8)}
    assert len(colors) == 8  # eight distinct colour-and-marker pairs
