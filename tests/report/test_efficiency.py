"""The efficiency report: report.html, its figures and CSV tables, from an EfficiencyResult."""

from __future__ import annotations

import csv
import dataclasses
import io
import warnings
from pathlib import Path

import pytest

from exitwise.report import efficiency, write_report
from exitwise.report import format as fmt
from exitwise.results import ComparisonResult, EfficiencyResult, RobustnessResult
from tests.report.factories import (
    comparison_result,
    efficiency_result,
    pareto,
    policy,
    robustness_result,
)


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.parametrize(
    ("cls", "make"),
    [
        (EfficiencyResult, efficiency_result),
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
    rows = _csv(out / "exits.csv")
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
            rows, points = _csv(out / f"{kind}_{name}.csv"), getattr(pol, kind)
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
    r.policies = {"max prob/odd": dataclasses.replace(grid, sweep=[lone], pareto=pareto([lone])),
                  "grid": grid}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(r, tmp_path)
    assert {"sweep_max_prob_odd.csv", "pareto_max_prob_odd.csv", "sweep_grid.csv"} <= {
        p.name for p in tmp_path.iterdir()
    }
