"""The offloading report (seed 002, Figs. 3-6): offload.html, its figures and CSV, the goals and
the Markdown the CLI prints, from a synthetic but realistic OffloadResult."""

from __future__ import annotations

import csv
import dataclasses
import html as markup
import io
import math
from pathlib import Path

import pytest

from exitwise.report import figures as plot
from exitwise.report import offload
from exitwise.report.offload import offload_markdown, write_offload_report
from exitwise.results import OffloadResult, OffloadRow
from tests.report.factories import (
    ALPHAS,
    BEST,
    IMAGE_BYTES,
    KS,
    METHODS,
    PNG,
    SIGMAS,
    TITLE,
    offload_result,
)


@pytest.fixture
def fast_png(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures are built but not rasterised (the module's page rasterises them once)."""
    monkeypatch.setattr(plot, "figure_png", lambda fig: PNG)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_offload_report(offload_result(), tmp_path_factory.mktemp("offload"))


def _html(paths: list[Path]) -> str:
    return paths[-1].read_text(encoding="utf-8")


def test_round_trips() -> None:
    result = offload_result()
    assert len(result.rows) == 10 + 10 * 2 * 3 * 2
    assert OffloadResult.from_json(result.to_json()) == result


def test_files_and_csv(written: list[Path]) -> None:
    names = [p.name for p in written]
    assert names[-1] == "offload.html"  # the page last
    assert set(names) == {*offload.FIGURES, "offload.csv", "offload.html"}
    for p in written:
        assert p.is_file() and p.stat().st_size > 0
    for name in offload.FIGURES:
        assert (written[0].parent / name).read_bytes()[:8] == PNG
    rows = list(csv.DictReader(io.StringIO((written[0].parent / "offload.csv").read_text())))
    result = offload_result()
    assert len(rows) == len(result.rows)
    assert rows[0]["method"] == "cloud_only" and rows[0]["alpha"] == "" == rows[0]["edge_exits"]
    assert {r["method"] for r in rows} == {"cloud_only", *METHODS}
    first = next(r for r in rows if r["method"] == "committee")
    assert math.isclose(
        float(first["total_flops"]), float(first["edge_flops"]) + float(first["cloud_flops"])
    )


def test_page(written: list[Path]) -> None:
    html = _html(written)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html  # the title came out escaped, and there is no script
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Offloading" in html
    assert "veth &lt;pair&gt;" in html  # the link's note, escaped
    for name in offload.FIGURES:
        stem = name.removesuffix(".png")
        assert f'<figure id="{stem}"><img src="data:image/png;base64,' in html
        assert f"<code>{name}</code>" in html
    for fig in (3, 4, 5, 6):
        assert f"(seed 002, Fig. {fig})" in html
    assert "k = 3 side exits on the edge (the largest k" in html
    # the link: asked and measured
    assert "11.9 ± 0.71 ms (200 empty HTTP round trips)" in html
    assert "91.2 ± 3.4 Mbit/s" in html and "93.9 Mbit/s" in html
    assert "11.9 ± 0.66 ms (jitter)" in html
    # the goals
    assert "<b>Latency goal met</b>" in html and f"{BEST} answers in" in html
    assert "<b>Edge-share goal met</b>" in html
    for cells in offload.goal_cells(offload_result()):
        assert "<tr>" + "".join(
            f'<td class="l">{c}</td>' for c in cells
        ) + "</tr>" in markup.unescape(html)
    assert "<h2>Every row at σ = 0</h2>" in html and "<h2>Every row at σ = 1</h2>" in html
    assert "exitwise offload runs/caltech101_mnv2" in html


def _expected_best(result: OffloadResult) -> OffloadRow:
    """Goal (a) by brute force over the synthetic rows."""
    cloud = next(r for r in result.rows if r.method == "cloud_only" and r.sigma == 0.0)
    rows = [
        r
        for r in result.rows
        if r.method != "cloud_only" and r.sigma == 0.0 and r.accuracy >= cloud.accuracy - 0.005
    ]
    return min(rows, key=lambda r: r.latency_ms)


def test_latency_goal_met() -> None:
    result = offload_result()
    goal = offload.latency_goal(result)
    best = _expected_best(result)
    assert goal.best == best and offload.row_label(best) == BEST
    assert goal.cloud is not None and goal.ratio is not None
    assert math.isclose(goal.ratio, best.latency_ms / goal.cloud.latency_ms)
    assert goal.ratio <= 0.5 and goal.met
    cells = offload.goal_cells(result)[0]
    assert cells[3] == BEST and cells[4] == "met"
    assert cells[2].startswith(f"{goal.ratio:.2f}× (")
    assert "(-0.30 pt)" in cells[2]  # the accuracy against cloud only


def test_latency_goal_fails_on_a_slow_edge() -> None:
    result = offload_result(edge_base_ms=10.0)  # the edge's compute eats the saving
    goal = offload.latency_goal(result)
    assert goal.best is not None and goal.ratio is not None and goal.ratio > 0.5
    assert not goal.met
    assert offload.goal_cells(result)[0][4] == "not met"
    text = offload_markdown(result)
    assert f"| {offload.goal_cells(result)[0][1]} |" in text and "| not met |" in text


@pytest.mark.usefixtures("fast_png")
def test_none_qualifies(tmp_path: Path) -> None:
    result = offload_result(drop=-0.01, share_scale=0.2, title="Lossy")
    goal = offload.latency_goal(result)
    assert goal.cloud is not None and goal.best is None and not goal.met
    cells = offload.goal_cells(result)
    assert cells[0][3:] == ["none qualifies", "not met"]
    edge = offload.edge_goal(result)
    assert edge.best is not None and edge.best.edge_share < 0.2 and not edge.met
    assert all(c[4] == "not met" for c in cells[1:])
    text = offload_markdown(result)
    assert "| none qualifies | not met |" in text
    paths = write_offload_report(result, tmp_path)
    html = _html(paths)
    assert "<b>Latency goal not met</b>" in html and "none qualifies" in html
    assert "<b>Edge-share goal not met</b>" in html


def test_edge_goal() -> None:
    result = offload_result()
    best = offload.edge_goal(result)
    at_one = [r for r in result.rows if r.sigma == 1.0 and r.method != "cloud_only"]
    assert best.best == max(at_one, key=lambda r: r.edge_share) and best.met
    committee = offload.edge_goal(result, "committee")
    assert committee.best is not None and committee.best.method == "committee"
    assert committee.best.edge_share < best.best.edge_share
    labels = [c[0] for c in offload.goal_cells(result)]
    assert labels[1:] == [
        "(b) At the edge at σ = 1, best row",
        "(b) At the edge at σ = 1, EE-DNN (max probability)",
        "(b) At the edge at σ = 1, committee of exits",
    ]


def test_wire_cells() -> None:
    cells = offload.wire_cells(offload_result())
    assert [c[0] for c in cells] == [
        "k = 1: features after exit 1 (FP32)",
        "k = 2: features after exit 2 (FP32)",
        "k = 3: features after exit 3 (FP32)",
        "cloud only (conventional DNN): raw image (UINT8)",
    ]
    k3 = cells[2]
    assert k3[1] == "9,800 B" and k3[2] == "29.1 KiB"  # 96 x 5 x 5 floats + the header
    assert k3[3] == f"{3.1 * 9600 / 9800:.2f}×" and k3[4] == f"{9800 / IMAGE_BYTES:.2f}×"
    assert " – " in k3[5]  # a range: the edge share varies
    k1 = cells[0]
    assert k1[1] == "37.7 KiB" and k1[4] == f"{38600 / IMAGE_BYTES:.2f}×"
    assert cells[3][1] == "18.9 KiB" and cells[3][5] == "18.9 KiB"  # always the whole image


def test_markdown() -> None:
    text = offload_markdown(offload_result())
    assert text.startswith(f"### {TITLE}\n")
    assert "**Goals:**" in text and f"| {BEST} | met |" in text
    assert "**Bytes on the wire** (raw image 18.8 KiB):" in text
    assert "**Per blur level** (k = 3):" in text
    assert "measured 91.2 ± 3.4 Mbit/s, RTT 11.9 ± 0.71 ms" in text
    header, rows = offload.sigma_table(offload_result())
    assert len(rows) == len(ALPHAS) * len(SIGMAS)
    assert len(header) == 2 + 3 * len(METHODS) + 2
    assert all(len(r) == len(header) for r in rows)
    row = rows[0]  # alpha 0.8, sigma 0, k = 3
    assert row[:2] == ["0.8", "0"] and row[-1] == "30.0 ± 0.45 ms"
    assert "| " + " | ".join(row) + " |" in text


@pytest.mark.usefixtures("fast_png")
def test_one_method_without_cloud(tmp_path: Path) -> None:
    result = offload_result(methods=("max_probability",), cloud=False, title="Partial")
    result = dataclasses.replace(result, link=None)  # run in process, no link
    paths = write_offload_report(result, tmp_path)
    assert {p.name for p in paths} == {*offload.FIGURES, "offload.csv", "offload.html"}
    html = _html(paths)
    assert "Latency goal</b>: not measured" in html
    assert "<dt>Link</dt><dd>none recorded</dd>" in html and "Measured RTT" not in html
    assert "Link (" not in offload_markdown(result)
    cells = offload.goal_cells(result)
    assert cells[0][2:] == ["no cloud-only row at σ = 0", "-", "not measured"]
    assert "committee" not in offload.sigma_table(result)[0][2]


def test_cloud_only_leaves_out_the_edge_share() -> None:
    result = dataclasses.replace(
        offload_result(), rows=[r for r in offload_result().rows if r.method == "cloud_only"]
    )
    assert offload.edge_share_figure(result) is None
    assert offload.latency_figure(result) is not None and offload.accuracy_figure(result)
    assert offload.wire_cells(result)[0][0].startswith("cloud only")
    assert offload.edge_goal(result).best is None


def test_figures_read_well() -> None:
    result = offload_result()
    fig = offload.accuracy_figure(result)
    assert fig is not None
    axes = fig.axes
    assert len(axes) == len(ALPHAS) * len(KS)
    assert axes[-1].get_xlabel() == "blur sigma (pixels)"
    assert axes[0].get_ylabel() == "total accuracy (%)"
    assert len(axes[0].get_lines()) == 3  # both rules and cloud only
    latency = offload.latency_figure(result)
    assert latency is not None and len(latency.axes) == len(ALPHAS)
    assert latency.axes[0].get_title() == "α = 0.8, k = 3 exits on the edge"
    assert latency.legends and len(latency.legends[0].get_texts()) == 3


def test_shared_axis_shows_every_panel() -> None:
    """The y range of panels sharing it covers the highest panel, not only the first."""
    result = offload_result(methods=("max_probability",), cloud=False)
    fig = offload.flops_figure(result)
    assert fig is not None
    top = max(r.edge_flops + r.cloud_flops for r in result.rows if r.edge_exits == 3) / 1e6
    assert all(ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= top for ax in fig.axes)
