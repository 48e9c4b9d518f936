"""The robustness report: robustness.html, its figures and CSV tables, from a RobustnessResult."""

from __future__ import annotations

from pathlib import Path

from exitwise.report import format as fmt
from exitwise.report import robustness, write_robustness_report
from tests.report.factories import CAP_EXIT, read_csv, robustness_result

FIGURES = robustness.FIGURES


def test_page_shows_the_numbers(pages: dict[str, Path]) -> None:
    html = pages["robustness"].read_text(encoding="utf-8")
    study = robustness_result()
    noise = [study.results[f"gaussian_noise@{v:g}"] for v in (0.0, 0.05, 0.1, 0.2)]
    # the headline quotes the mildest level costing the backbone 5 points, and the FLOPs spent
    # going from the clean level to it
    quoted = next(r for r in noise if r.backbone_accuracy <= noise[0].backbone_accuracy - 0.05)
    clean, flops = noise[0].routed.flops_fraction, quoted.routed.flops_fraction
    assert f"<b>{fmt.pct(clean, 0)} → {fmt.pct(flops, 0)}</b>" in html
    assert f"routed accuracy <b>{fmt.pct(quoted.routed.accuracy)}</b>" in html
    for r in noise:
        assert f"<td>{fmt.pct(r.routed.accuracy)}</td>" in html
        assert f"<td>{fmt.pct(r.backbone_accuracy)}</td>" in html
    last = study.slowdown[-1]
    assert last.capped is not None
    assert f"erases <b>{fmt.pct(last.routed.saving_erased, 0)}</b>" in html
    assert f"cap at exit {CAP_EXIT} keeps it to <b>{fmt.pct(last.capped.saving_erased, 0)}" in html
    for text in ("eps 8/255", "FGSM on the final exit", "10 iterations", "synthetic-signs"):
        assert text in html
    assert "MaxProbability(threshold=0.9, temperature=1.0)" in html
    assert "<b>500</b> evaluation images" in html


def test_results_csv(pages: dict[str, Path]) -> None:
    study = robustness_result()
    rows = read_csv(pages["robustness"].parent / "robustness.csv")
    assert len(rows) == len(study.results) == 2 * 4 + 2 * 3 + 3
    for row in rows:
        r = study.results[f"{row['disturbance']}@{float(row['level']):g}"]
        assert [float(row[f"accuracy_exit_{i}"]) for i in range(4)] == r.exit_accuracy
        assert float(row["backbone_accuracy"]) == r.backbone_accuracy
        for mode in ("routed", "capped"):
            point = getattr(r, mode)
            assert float(row[f"{mode}_accuracy"]) == point.accuracy
            assert float(row[f"{mode}_flops_fraction"]) == point.flops_fraction
            assert (
                tuple(float(row[f"{mode}_share_exit_{i}"]) for i in range(4)) == point.exit_shares
            )
    order = [row["disturbance"] for row in rows]  # study order, each sorted by level
    assert order[:4] == ["gaussian_noise"] * 4 and order[-3:] == ["slowdown[all]"] * 3
    fgsm = [row for row in rows if row["name"] == "fgsm"]
    assert [float(row["level_shown"]) for row in fgsm] == [0.0, 2.0, 8.0]
    assert {row["level_unit"] for row in fgsm} == {"1/255"}
    assert {row["level_unit"] for row in rows if row["name"] == "deepfool"} == {"iterations"}


def test_slowdown_csv(pages: dict[str, Path]) -> None:
    study = robustness_result()
    rows = read_csv(pages["robustness"].parent / "slowdown.csv")
    assert [float(row["eps_255"]) for row in rows] == [0.0, 4.0, 8.0]
    for row, entry in zip(rows, study.slowdown, strict=True):
        assert float(row["eps"]) == entry.eps
        for mode in ("routed", "capped"):
            for key in ("accuracy", "flops_fraction", "saving", "saving_erased"):
                assert float(row[f"{mode}_{key}"]) == getattr(getattr(entry, mode), key)


def test_corruptions_only(tmp_path: Path) -> None:
    """No attack, no slowdown, no capped policy: those figures, columns and sections go."""
    study = robustness_result()
    study.results = {k: r for k, r in study.results.items() if r.kind == "corruption"}
    for r in study.results.values():
        r.capped = None
    study.slowdown = []
    html = write_robustness_report(study, tmp_path).read_text()
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"robustness.html", "robustness.csv", *FIGURES[0:3:2]}
    assert "capped" not in (tmp_path / "robustness.csv").read_text().splitlines()[0]
    assert "<h2>Slowdown attack</h2>" not in html and "<th>Capped</th>" not in html


def test_labels() -> None:
    assert robustness.disturbance_label("pgd[final]") == "PGD on the final exit"
    assert robustness.disturbance_label("slowdown[all]") == "Slowdown (DeepSloth) on all exits"
    assert robustness.disturbance_label("fgsm[2]") == "FGSM on exit 2"
    assert robustness.disturbance_label("gaussian_noise") == "Gaussian noise"
    assert robustness.disturbance_label("shot_noise") == "Shot noise"
    assert robustness.level_text("pgd", 8 / 255) == "eps 8/255"
    assert robustness.level_text("deepfool", 1) == "1 iteration"
    assert robustness.level_text("gaussian_blur", 1.5) == "sigma 1.5"
    assert robustness.level_text("shot_noise", 0.2) == "level 0.2"
