"""The edge-cloud offloading report: an :class:`~exitwise.results.OffloadResult` -> figures, a CSV,
one page (seed 002, Pacheco et al.: Figs. 3-6).

The edge runs the early-exit network up to its k-th side exit; an image that no exit there
classifies confidently (max probability, or the committee of exits, against alpha) is offloaded:
its intermediate tensor goes over the link and the cloud runs the rest. The baseline sends the raw
image to the conventional network in the cloud (``cloud_only`` rows: alpha and k ``None``, the
same in every panel). Files written into ``out_dir``:

* ``offload_accuracy.png`` (Fig. 3): total accuracy (edge and cloud together) against the blur
  sigma, a row per alpha and a column per k, both rules against cloud only.
* ``offload_edge_share.png`` (Fig. 4), ``offload_flops.png`` (Fig. 5), ``offload_latency.png``
  (Fig. 6): the share classified at the edge, the mean FLOPs per image (total and the edge's part)
  and the mean end-to-end latency with its 95% confidence interval, a panel per alpha, at the
  largest k of the study (the seed's three branches). A figure without data is left out.
* ``offload.csv``: every row.
* ``offload.html``: self-contained, on the same layout as ``report.html``, written last.

The cells of the tables come from :func:`goal_cells`, :func:`wire_cells`, :func:`sigma_table`
and :func:`row_cells`, shared with :func:`offload_markdown` (what the CLI prints).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from exitwise.report import figures as plot
from exitwise.report import format as fmt
from exitwise.report.markdown import rows_table
from exitwise.report.pages import csv_bytes, embed, render_page, write_files
from exitwise.report.robustness import level_axis
from exitwise.results import LinkInfo, OffloadResult, OffloadRow

__all__ = [
    "ACCURACY_SLACK",
    "CLEAN_SIGMA",
    "CLOUD",
    "EDGE_GOAL",
    "EDGE_SIGMA",
    "FIGURES",
    "GOAL_HEADER",
    "LATENCY_GOAL",
    "METHODS",
    "OFFLOAD_FILE",
    "ROW_HEADER",
    "WIRE_HEADER",
    "EdgeGoal",
    "LatencyGoal",
    "accuracy_figure",
    "edge_goal",
    "edge_share_figure",
    "flops_figure",
    "goal_cells",
    "largest_k",
    "latency_figure",
    "latency_goal",
    "link_items",
    "offload_markdown",
    "render_figures",
    "row_cells",
    "row_label",
    "sigma_table",
    "tables",
    "wire_cells",
    "write_offload_report",
]

OFFLOAD_FILE = "offload.html"
FIGURES = (
    "offload_accuracy.png",
    "offload_edge_share.png",
    "offload_flops.png",
    "offload_latency.png",
)
CLOUD = "cloud_only"
METHODS = {
    "max_probability": "EE-DNN (max probability)",
    "committee": "committee of exits",
    CLOUD: "cloud only (conventional DNN)",
}
LATENCY_GOAL = 0.5
"""Goal (a): the early-exit latency at sigma 0 is at most this fraction of cloud-only's ..."""
ACCURACY_SLACK = 0.005
"""... with a total accuracy at most this much (absolute: half a point) below cloud-only's."""
EDGE_GOAL = 0.20
"""Goal (b): at least this share of the images classified at the edge at :data:`EDGE_SIGMA`."""
CLEAN_SIGMA = 0.0
EDGE_SIGMA = 1.0

_BLUR = "gaussian_blur"  # robustness.level_axis's name for the sigma axis
_STYLES: dict[str, dict[str, Any]] = {
    "max_probability": {"color": plot.POLICY_COLORS[0], "marker": "o", "lw": 2.2, "ms": 5},
    "committee": {"color": plot.POLICY_COLORS[1], "marker": "s", "lw": 2.0, "ms": 5, "ls": "--"},
    CLOUD: {"color": plot.BACKBONE_COLOR, "marker": "^", "lw": 1.6, "ms": 4.5, "ls": ":"},
}
_GOAL_LINE: dict[str, Any] = {"color": "#999999", "lw": 1.2, "ls": "-."}

ROW_HEADER = [
    "σ",
    "Method",
    "α",
    "k",
    "Total accuracy",
    "vs cloud only",
    "At the edge",
    "Edge FLOPs",
    "Cloud FLOPs",
    "Wire per image",
    "Latency (95% CI)",
    "Edge compute",
    "Network + cloud",
    "Live agreement",
    "Fallbacks",
]
GOAL_HEADER = ["Goal", "Target", "Measured", "Row", "Verdict"]
WIRE_HEADER = [
    "Sent",
    "Request per offloaded image",
    "As JSON lists",
    "JSON ÷ binary",
    "Binary ÷ raw image",
    "Per image, all images (range)",
]


# ------------------------------------------------------------------------------ rows and labels


def _method_name(method: str) -> str:
    return METHODS.get(method, method.replace("_", " "))


def _alpha(alpha: float | None) -> str:
    return "-" if alpha is None else f"{alpha:g}"


def row_label(row: OffloadRow) -> str:
    """``"EE-DNN (max probability), α = 0.9, k = 3"``; ``"cloud only (conventional DNN)"``."""
    if row.method == CLOUD:
        return _method_name(CLOUD)
    return f"{_method_name(row.method)}, α = {_alpha(row.alpha)}, k = {row.edge_exits}"


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, abs_tol=1e-9)


def _order(result: OffloadResult) -> Callable[[OffloadRow], tuple[Any, ...]]:
    """The sort key of rows: cloud only first, then the config's methods, alpha, k, sigma."""
    known = [CLOUD, *result.config.methods]

    def key(r: OffloadRow) -> tuple[Any, ...]:
        rank = known.index(r.method) if r.method in known else len(known)
        return (rank, r.method, r.alpha or 0.0, r.edge_exits or 0, r.sigma)

    return key


def _sorted(result: OffloadResult) -> list[OffloadRow]:
    return sorted(result.rows, key=_order(result))


def _cloud(result: OffloadResult) -> list[OffloadRow]:
    return sorted((r for r in result.rows if r.method == CLOUD), key=lambda r: r.sigma)


def _early(result: OffloadResult) -> list[OffloadRow]:
    return [r for r in _sorted(result) if r.method != CLOUD]


def _methods(result: OffloadResult) -> list[str]:
    """The early-exit methods with rows, in the config's order."""
    return list(dict.fromkeys(r.method for r in _early(result)))


def _alphas(result: OffloadResult) -> list[float]:
    return sorted({r.alpha for r in _early(result) if r.alpha is not None})


def largest_k(result: OffloadResult) -> int | None:
    """The largest k with early-exit rows (else the config's); Figs. 4-6 show it, as the seed
    shows its three branches. ``None`` when there is neither."""
    ks = [r.edge_exits for r in _early(result) if r.edge_exits is not None]
    return max(ks or result.config.edge_exits, default=None)


def _at(rows: Sequence[OffloadRow], sigma: float) -> list[OffloadRow]:
    return [r for r in rows if _same(r.sigma, sigma)]


def _select(
    result: OffloadResult, method: str, alpha: float | None, k: int | None
) -> list[OffloadRow]:
    """One curve: the rows of a method (at an alpha and k), by sigma; cloud only ignores both."""
    if method == CLOUD:
        return _cloud(result)
    return sorted(
        (
            r
            for r in result.rows
            if r.method == method
            and alpha is not None
            and _same(r.alpha, alpha)
            and r.edge_exits == k
        ),
        key=lambda r: r.sigma,
    )


# ------------------------------------------------------------------------------------- goals


class LatencyGoal(NamedTuple):
    """Goal (a) at sigma 0: the fastest early-exit row whose accuracy is within
    :data:`ACCURACY_SLACK` of cloud only's (``best`` ``None``: none qualifies)."""

    cloud: OffloadRow | None
    best: OffloadRow | None
    ratio: float | None  # best latency / cloud-only latency
    met: bool


class EdgeGoal(NamedTuple):
    """Goal (b) at sigma 1: the row (of a method, or of all) with the largest edge share."""

    method: str | None  # None: over every early-exit row
    best: OffloadRow | None
    met: bool


def latency_goal(result: OffloadResult) -> LatencyGoal:
    """Goal (a): at sigma 0, among the early-exit rows with total accuracy >= cloud only's minus
    half a point, the one with the lowest mean latency; met when its latency is at most
    :data:`LATENCY_GOAL` times cloud only's."""
    cloud = next(iter(_at(_cloud(result), CLEAN_SIGMA)), None)
    if cloud is None:
        return LatencyGoal(None, None, None, False)
    floor = cloud.accuracy - ACCURACY_SLACK - 1e-12
    qualified = [r for r in _at(_early(result), CLEAN_SIGMA) if r.accuracy >= floor]
    best = min(qualified, key=lambda r: r.latency_ms, default=None)
    if best is None:
        return LatencyGoal(cloud, None, None, False)
    ratio = best.latency_ms / cloud.latency_ms if cloud.latency_ms > 0 else math.inf
    return LatencyGoal(cloud, best, ratio, ratio <= LATENCY_GOAL)


def edge_goal(result: OffloadResult, method: str | None = None) -> EdgeGoal:
    """Goal (b): the largest share classified at the edge at sigma 1 (of ``method``'s rows, or
    of all early-exit rows); met when at least :data:`EDGE_GOAL`."""
    rows = [r for r in _at(_early(result), EDGE_SIGMA) if method is None or r.method == method]
    best = max(rows, key=lambda r: r.edge_share, default=None)
    return EdgeGoal(method, best, best is not None and best.edge_share >= EDGE_GOAL - 1e-12)


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def goal_cells(result: OffloadResult) -> list[list[str]]:
    """The goals as :data:`GOAL_HEADER` names them: (a) latency at sigma 0, (b) the edge share at
    sigma 1, over every row and per method."""
    lat = latency_goal(result)
    target = (
        f"≤ {LATENCY_GOAL:g}× cloud only's latency, total accuracy within "
        f"{100 * ACCURACY_SLACK:g} pt of it"
    )
    if lat.cloud is None:
        latency = ["no cloud-only row at σ = 0", "-", "not measured"]
    elif lat.best is None:
        latency = [
            f"cloud only {fmt.ms(lat.cloud.latency_ms, lat.cloud.latency_ci95_ms)}, accuracy "
            f"{fmt.pct(lat.cloud.accuracy, 2)}",
            "none qualifies",
            "not met",
        ]
    else:
        b, c = lat.best, lat.cloud
        latency = [
            f"{fmt.times(lat.ratio)} ({fmt.ms(b.latency_ms, b.latency_ci95_ms)} vs "
            f"{fmt.ms(c.latency_ms, c.latency_ci95_ms)}); accuracy {fmt.pct(b.accuracy, 2)} "
            f"({fmt.points(b.accuracy - c.accuracy, 2)})",
            row_label(b),
            _verdict(lat.met),
        ]
    cells = [[f"(a) Latency at σ = {CLEAN_SIGMA:g}", target, *latency]]
    goals = [edge_goal(result)] + [edge_goal(result, m) for m in _methods(result)]
    for g in goals:
        who = "best row" if g.method is None else _method_name(g.method)
        if g.best is None:
            measured = [f"no early-exit row at σ = {EDGE_SIGMA:g}", "-", "not measured"]
        else:
            measured = [fmt.pct(g.best.edge_share), row_label(g.best), _verdict(g.met)]
        name = f"(b) At the edge at σ = {EDGE_SIGMA:g}, {who}"
        cells.append([name, f"≥ {fmt.pct_exact(EDGE_GOAL)} of the images", *measured])
    return cells


def wire_cells(result: OffloadResult) -> list[list[str]]:
    """Goal (c), as :data:`WIRE_HEADER` names it: per k, the request body per offloaded image
    (JSON header + the raw tensor bytes), the same tensor as JSON lists (the seed's encoding),
    their ratio, the ratio to the raw image, and the bytes per image over all images (those
    classified at the edge send nothing): the range over sigma, alpha and method. Then cloud
    only, which sends the raw image."""
    image, early = result.image_bytes, _early(result)
    ks = sorted({r.edge_exits for r in early if r.edge_exits is not None})
    groups: list[tuple[str, int | None, list[OffloadRow]]] = [
        (f"k = {k}: features after exit {k} ({result.config.features})", k, early) for k in ks
    ]
    groups.append((f"{_method_name(CLOUD)}: raw image (UINT8)", None, _cloud(result)))
    cells = []
    for name, k, rows in groups:
        rows = [r for r in rows if r.edge_exits == k]
        sent = [r for r in rows if r.request_bytes > 0]
        if not sent:
            continue
        binary = sum(r.request_bytes for r in sent) / len(sent)
        json = sum(r.json_bytes for r in sent) / len(sent)
        low, high = min(r.wire_bytes for r in rows), max(r.wire_bytes for r in rows)
        cells.append(
            [
                name,
                fmt.size(binary),
                fmt.size(json) if json > 0 else "-",
                fmt.times(json / binary) if json > 0 else "-",
                fmt.times(binary / image) if image > 0 else "-",
                fmt.size(low) if math.isclose(low, high) else f"{fmt.size(low)} – {fmt.size(high)}",
            ]
        )
    return cells


# -------------------------------------------------------------------------------------- tables


def _flops_scale(result: OffloadResult) -> tuple[float, str]:
    largest = max((r.edge_flops + r.cloud_flops for r in result.rows), default=0.0)
    return fmt.flops_unit(largest)


def row_cells(row: OffloadRow, cloud: OffloadRow | None, scale: float) -> list[str]:
    """One row as :data:`ROW_HEADER` names it; FLOPs divided by ``scale`` (one unit a table),
    the accuracy against ``cloud`` (cloud only at the same sigma)."""
    vs = "-" if cloud is None or row is cloud else fmt.points(row.accuracy - cloud.accuracy, 2)
    return [
        f"{row.sigma:g}",
        _method_name(row.method),
        _alpha(row.alpha),
        "-" if row.edge_exits is None else str(row.edge_exits),
        fmt.pct(row.accuracy, 2),
        vs,
        fmt.pct(row.edge_share),
        fmt.number(row.edge_flops / scale),
        fmt.number(row.cloud_flops / scale),
        fmt.size(row.wire_bytes),
        fmt.ms(row.latency_ms, row.latency_ci95_ms),
        fmt.ms(row.edge_ms),
        fmt.ms(row.network_ms),
        fmt.pct(row.live_agreement),
        fmt.count(row.fallbacks),
    ]


def _detail(result: OffloadResult) -> tuple[list[str], list[tuple[str, list[list[str]]]]]:
    """``(header, [(title, rows)])``: every row at sigma 0 and at sigma 1 (cloud only first)."""
    scale, unit = _flops_scale(result)
    header = [h.replace("FLOPs", unit) for h in ROW_HEADER]
    out = []
    for sigma in dict.fromkeys((CLEAN_SIGMA, EDGE_SIGMA)):
        rows = _at(_sorted(result), sigma)
        if rows:
            cloud = next((r for r in rows if r.method == CLOUD), None)
            out.append((f"σ = {sigma:g}", [row_cells(r, cloud, scale) for r in rows]))
    return header, out


def sigma_table(result: OffloadResult, k: int | None = None) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` at ``k`` (default :func:`largest_k`): per alpha and sigma, the total
    accuracy, the share at the edge and the latency (95% CI) of each rule, then cloud only's
    accuracy and latency."""
    k = largest_k(result) if k is None else k
    methods, cloud = _methods(result), _cloud(result)
    header = ["α", "σ"]
    for m in methods:
        header += [f"{_method_name(m)}: accuracy", "at the edge", "latency"]
    if cloud:
        header += [f"{_method_name(CLOUD)}: accuracy", "latency"]
    sigmas, out = _sigmas(result), []
    for alpha in _panels(result):
        curves = {m: {r.sigma: r for r in _select(result, m, alpha, k)} for m in methods}
        for sigma in sigmas:
            cells = [_alpha(alpha), f"{sigma:g}"]
            for m in methods:
                r = curves[m].get(sigma)
                cells += (
                    ["-", "-", "-"]
                    if r is None
                    else [
                        fmt.pct(r.accuracy, 2),
                        fmt.pct(r.edge_share),
                        fmt.ms(r.latency_ms, r.latency_ci95_ms),
                    ]
                )
            if cloud:
                c = next(iter(_at(cloud, sigma)), None)
                cells += (
                    ["-", "-"]
                    if c is None
                    else [fmt.pct(c.accuracy, 2), fmt.ms(c.latency_ms, c.latency_ci95_ms)]
                )
            out.append(cells)
    return header, out


def link_items(link: LinkInfo | None) -> list[tuple[str, str]]:
    """The link as ``(name, value)`` pairs: what was asked against what was measured through the
    whole path."""
    if link is None:
        return [("Link", "none recorded")]
    mode = {
        "netns": "two network namespaces joined by a veth pair, rate shaped by tc tbf",
        "loopback": "loopback (namespaces not permitted), the delaying relay alone",
    }.get(link.mode, link.mode)
    delay = {
        "relay": "a delaying TCP relay in front of the cloud (half the RTT each way)",
        "netem": "tc netem",
    }.get(link.delay_by, link.delay_by)

    def measured(value: float | None, std: float | None, unit: str) -> str:
        if value is None:
            return "not measured"
        return f"{fmt.number(value)} ± {fmt.number(std or 0.0)} {unit}"

    rtt = measured(link.measured_rtt_ms, link.measured_rtt_std_ms, "ms")
    if link.measured_rtt_ms is not None:
        rtt += f" ({fmt.count(link.rtt_samples)} empty HTTP round trips)"
    items = [
        ("Mode", f"{link.mode}: {mode}"),
        ("Delay by", f"{link.delay_by}: {delay}"),
        ("Rate asked", f"{fmt.number(link.rate_mbit)} Mbit/s"),
        ("Rate measured (iperf3)", measured(link.measured_mbit, link.measured_mbit_std, "Mbit/s")),
        ("RTT asked", f"{fmt.number(link.rtt_ms)} ± {fmt.number(link.jitter_ms)} ms (jitter)"),
        ("RTT measured", rtt),
        ("Edge CPUs", ", ".join(map(str, link.edge_cpus)) or "not pinned"),
        ("Cloud CPUs", ", ".join(map(str, link.cloud_cpus)) or "not pinned"),
    ]
    if link.note:
        items.append(("Note", link.note))
    return items


def tables(result: OffloadResult) -> dict[str, bytes]:
    """``offload.csv``: every row (cloud only first, then by method, alpha, k and sigma), with
    the total FLOPs per image; empty cells for cloud only's alpha and k."""
    names = [f.name for f in dataclasses.fields(OffloadRow)]
    rows = [
        [("" if getattr(r, n) is None else getattr(r, n)) for n in names]
        + [r.edge_flops + r.cloud_flops]
        for r in _sorted(result)
    ]
    return {"offload.csv": csv_bytes([*names, "total_flops"], rows)}


# ------------------------------------------------------------------------------------- figures


def _sigma_axis(ax: Axes, sigmas: Sequence[float]) -> dict[float, float]:
    """Put the blur sigmas on ``ax``'s x axis; ``{sigma: x}``."""
    return dict(zip(sigmas, level_axis(ax, _BLUR, "corruption", sigmas), strict=True))


def _curves(result: OffloadResult, alpha: float | None, k: int | None, cloud: bool) -> list[Any]:
    """``[(method, rows by sigma)]`` with rows: the rules at ``alpha`` and ``k``, cloud only."""
    methods = _methods(result) + ([CLOUD] if cloud else [])
    curves = [(m, _select(result, m, alpha, k)) for m in methods]
    return [(m, rows) for m, rows in curves if rows]


def _style(method: str, result: OffloadResult) -> dict[str, Any]:
    if method in _STYLES:
        return _STYLES[method]
    color, marker = plot.policy_style(2 + _methods(result).index(method))
    return {"color": color, "marker": marker, "lw": 1.8, "ms": 5}


def _keys(result: OffloadResult, methods: Sequence[str]) -> list[Any]:
    return [plot.key(_method_name(m), **_style(m, result)) for m in methods]


def _panels(result: OffloadResult) -> list[float | None]:
    """The alphas of Figs. 4-6 (one panel each); one panel without early-exit rows."""
    return list(_alphas(result)) or [None]


def _panel_title(alpha: float | None, k: int | None) -> str:
    if alpha is None:
        return "cloud only"
    return f"α = {alpha:g}, k = {k} exit{'s' if k != 1 else ''} on the edge"


def _sigmas(result: OffloadResult) -> list[float]:
    return sorted({r.sigma for r in result.rows})


def _draw_lines(
    ax: Axes,
    x: dict[float, float],
    curves: Sequence[tuple[str, list[OffloadRow]]],
    value: Callable[[OffloadRow], float],
    result: OffloadResult,
) -> list[float]:
    drawn = []
    for method, rows in curves:
        ys = [value(r) for r in rows]
        ax.plot([x[r.sigma] for r in rows], ys, **_style(method, result), zorder=3)
        drawn += ys
    return drawn


def accuracy_figure(result: OffloadResult) -> Figure | None:
    """Fig. 3: total accuracy against the blur sigma, a row per alpha and a column per k, each
    rule against cloud only (the same in every panel); ``None`` without rows."""
    if not result.rows:
        return None
    alphas = _panels(result)
    ks: list[int | None] = [*sorted({r.edge_exits for r in _early(result) if r.edge_exits})]
    ks = ks or [None]
    sigmas = _sigmas(result)
    nrows, ncols = len(alphas), len(ks)
    fig, axes = plot.subplots(
        nrows, ncols, (max(7.5, 4.3 * ncols), 3.3 * nrows + 1.2), sharex=True, sharey=True
    )
    drawn: list[float] = []
    for i, alpha in enumerate(alphas):
        for j, k in enumerate(ks):
            ax = axes[i, j]
            x = _sigma_axis(ax, sigmas)
            curves = _curves(result, alpha, k, cloud=True)
            drawn += _draw_lines(ax, x, curves, lambda r: 100.0 * r.accuracy, result)
            ax.set_title(_panel_title(alpha, k), fontsize=11)
            if i < nrows - 1:
                ax.set_xlabel("")
        axes[i, 0].set_ylabel("total accuracy (%)")
    low = min(drawn, default=0.0)
    axes[0, 0].set_ylim(*plot.accuracy_limits(low))
    shown = list(
        dict.fromkeys(m for a in alphas for k in ks for m, _ in _curves(result, a, k, True))
    )
    plot.legend_below(fig, _keys(result, shown), len(shown))
    fig.suptitle("Total accuracy (edge and cloud together) under Gaussian blur", fontsize=13)
    return fig


def _per_alpha(
    result: OffloadResult, cloud: bool, title: str
) -> tuple[Figure, list[tuple[Axes, dict[float, float], list[Any]]], int | None] | None:
    """A row of panels, one per alpha, at the largest k, with the sigma axis; ``None`` when no
    panel has a curve."""
    k, alphas = largest_k(result), _panels(result)
    curves = [_curves(result, a, k, cloud) for a in alphas]
    if not any(curves):
        return None
    fig, axes = plot.subplots(1, len(alphas), (max(7.5, 5.6 * len(alphas)), 4.8), sharey=True)
    sigmas, panels = _sigmas(result), []
    for ax, alpha, c in zip(axes[0], alphas, curves, strict=True):
        panels.append((ax, _sigma_axis(ax, sigmas), c))
        ax.set_title(_panel_title(alpha, k), fontsize=11)
    fig.suptitle(title, fontsize=13)
    return fig, panels, k


def _legend(fig: Figure, result: OffloadResult, panels: Sequence[Any], extra: list[Any]) -> None:
    shown = list(dict.fromkeys(m for *_, curves in panels for m, _ in curves))
    keys = _keys(result, shown) + extra
    plot.legend_below(fig, keys, min(len(keys), 4))


def edge_share_figure(result: OffloadResult) -> Figure | None:
    """Fig. 4: the share of images classified at the edge against the blur sigma at the largest
    k, a panel per alpha (cloud only classifies none there); ``None`` without early-exit rows."""
    made = _per_alpha(result, cloud=False, title="Images classified at the edge")
    if made is None:
        return None
    fig, panels, _ = made
    for ax, x, curves in panels:
        _draw_lines(ax, x, curves, lambda r: 100.0 * r.edge_share, result)
        ax.axhline(100.0 * EDGE_GOAL, **_GOAL_LINE, zorder=2)
        ax.set_ylim(0.0, 101.0)
    panels[0][0].set_ylabel("classified at the edge (%)")
    goal = f"goal: ≥ {fmt.pct_exact(EDGE_GOAL)} at σ = {EDGE_SIGMA:g}"
    _legend(fig, result, panels, [plot.key(goal, **_GOAL_LINE)])
    return fig


def flops_figure(result: OffloadResult) -> Figure | None:
    """Fig. 5: the mean FLOPs per image against the blur sigma at the largest k, a panel per
    alpha: the total (edge + cloud, solid) and the edge's part (thin dotted), cloud only
    constant; ``None`` without rows."""
    made = _per_alpha(result, cloud=True, title="Mean FLOPs per image (edge + cloud)")
    if made is None:
        return None
    fig, panels, _ = made
    scale, unit = _flops_scale(result)
    for ax, x, curves in panels:
        _draw_lines(ax, x, curves, lambda r: (r.edge_flops + r.cloud_flops) / scale, result)
        for method, rows in curves:
            if method != CLOUD:
                edge = [r.edge_flops / scale for r in rows]
                color = _style(method, result)["color"]
                ax.plot([x[r.sigma] for r in rows], edge, color=color, lw=1.2, ls=":", zorder=2)
    panels[0][0].set_ylim(bottom=0.0)  # shared: after every panel is drawn
    panels[0][0].set_ylabel(f"mean {unit} per image\n(FLOPs = 2 x MACs)")
    part = plot.key("dotted: the part on the edge", color="#555555", lw=1.2, ls=":")
    _legend(fig, result, panels, [part])
    return fig


def latency_figure(result: OffloadResult) -> Figure | None:
    """Fig. 6: the mean end-to-end latency per image with its 95% confidence interval (band and
    error bars) against the blur sigma at the largest k, a panel per alpha, cloud only included;
    ``None`` without rows."""
    made = _per_alpha(result, cloud=True, title="Mean end-to-end inference time per image")
    if made is None:
        return None
    fig, panels, _ = made
    for ax, x, curves in panels:
        for method, rows in curves:
            style = _style(method, result)
            xs = [x[r.sigma] for r in rows]
            mean = [r.latency_ms for r in rows]
            ci = [r.latency_ci95_ms for r in rows]
            ax.fill_between(
                xs,
                [m - c for m, c in zip(mean, ci, strict=True)],
                [m + c for m, c in zip(mean, ci, strict=True)],
                color=style["color"],
                alpha=0.18,
                lw=0,
                zorder=1,
            )
            ax.errorbar(xs, mean, yerr=ci, capsize=3, elinewidth=1.0, **style, zorder=3)
    panels[0][0].set_ylim(bottom=0.0)  # shared: after every panel is drawn
    panels[0][0].set_ylabel("mean latency per image (ms)")
    _legend(fig, result, panels, [])
    return fig


def render_figures(result: OffloadResult) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` in display order (Figs. 3-6), without the empty ones."""
    builders = (accuracy_figure, edge_share_figure, flops_figure, latency_figure)
    return plot.render_figures(
        {n: partial(b, result) for n, b in zip(FIGURES, builders, strict=True)}
    )


# ------------------------------------------------------------------------------------ markdown


def offload_markdown(result: OffloadResult) -> str:
    """The goals, the wire sizes and, at the largest k, the per-sigma accuracy, edge share and
    latency of each rule against cloud only (what ``exitwise offload`` prints)."""
    c, link = result.config, result.link
    lines = [
        f"### {result.title or 'Edge-cloud offloading'}",
        "",
        f"Run `{c.run}` on {c.dataset}: {fmt.count(c.test_images)} test images, latency measured "
        f"on {fmt.count(c.latency_images)} of them, one at a time; features sent as {c.features}.",
    ]
    if link is not None:
        items = dict(link_items(link))
        lines[-1] += (
            f" Link ({link.mode}): asked {items['Rate asked']}, RTT {items['RTT asked']}; "
            f"measured {items['Rate measured (iperf3)']}, RTT {items['RTT measured']}."
        )
    if result.command:
        lines[-1] += f" Printed by `{result.command}`."
    lines += ["", "**Goals:**", "", *rows_table(GOAL_HEADER, len(GOAL_HEADER), goal_cells(result))]
    wire = wire_cells(result)
    if wire:
        raw = f"raw image {fmt.size(result.image_bytes)}" if result.image_bytes else "raw image"
        lines += ["", f"**Bytes on the wire** ({raw}):", "", *rows_table(WIRE_HEADER, 1, wire)]
    header, rows = sigma_table(result)
    if rows:
        k = largest_k(result)
        lines += ["", f"**Per blur level** (k = {k}):", "", *rows_table(header, 2, rows)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- page


def _page(result: OffloadResult, figures: dict[str, bytes]) -> bytes:
    detail_header, detail = _detail(result)
    sigma_header, sigma_rows = sigma_table(result)
    cloud = _cloud(result)
    return render_page(
        OFFLOAD_FILE,
        title=result.title or "Edge-cloud offloading",
        result=result,
        c=result.config,
        link=result.link,
        link_items=link_items(result.link),
        figures=embed(figures),
        k=largest_k(result),
        latency=latency_goal(result),
        edge=edge_goal(result),
        edge_by_method=[edge_goal(result, m) for m in _methods(result)],
        goal_header=GOAL_HEADER,
        goals=goal_cells(result),
        wire_header=WIRE_HEADER,
        wire=wire_cells(result),
        sigma_header=sigma_header,
        sigma_rows=sigma_rows,
        detail_header=detail_header,
        detail=detail,
        cloud_flops=cloud[0].cloud_flops if cloud else None,
        fallbacks=sum(r.fallbacks for r in result.rows),
        disagreeing=[r for r in result.rows if r.live_agreement < 1.0],
        label=row_label,
        method_name=_method_name,
        rule_names=[_method_name(m) for m in result.config.methods],
        latency_goal=LATENCY_GOAL,
        accuracy_slack=ACCURACY_SLACK,
        edge_goal=EDGE_GOAL,
        clean_sigma=CLEAN_SIGMA,
        edge_sigma=EDGE_SIGMA,
        notes=[],
    )


def write_offload_report(result: OffloadResult, out_dir: str | Path) -> list[Path]:
    """Write the figures (Figs. 3-6 of seed 002), ``offload.csv`` and ``offload.html`` into
    ``out_dir``; returns the paths written, the page last. All is rendered before the first
    write: a failure writes nothing."""
    figures = render_figures(result)
    page = _page(result, figures)
    return write_files(out_dir, {**figures, **tables(result), OFFLOAD_FILE: page})
