"""The efficiency report: an :class:`~exitwise.results.EfficiencyResult` -> figures, CSVs, one page.

Files written into ``out_dir``:

* ``exit_costs.png``: FLOPs to reach each exit and each exit's accuracy (Fig. 3 of Chesalin et
  al.); ``accuracy_vs_flops.png``: accuracy against mean FLOPs over the threshold sweep (Fig. 4);
  ``exit_shares.png``: where the images leave; ``reliability.png`` with a calibration (see
  :mod:`exitwise.report.calibration`); ``training.png`` when a training history exists.
* ``exits.csv``, ``sweep_<policy>.csv``, ``pareto_<policy>.csv`` (with ``threshold_exit_<i>``
  columns for a per-exit threshold rule), ``calibration.csv`` and ``reliability.csv``.
* ``report.html``: self-contained (figures as data URIs, inline CSS, no script), written last.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from exitwise.report import figures as plot
from exitwise.report import format as fmt
from exitwise.report.calibration import (
    calibration_tables,
    ece_header,
    ece_rows,
    reliability_figure,
)
from exitwise.report.pages import csv_bytes, embed, render_page, write_files
from exitwise.results import EfficiencyResult, OperatingPoint, PolicyResult

__all__ = [
    "REPORT_FILE",
    "TOLERANCE",
    "accuracy_vs_flops_figure",
    "exit_costs_figure",
    "exit_shares_figure",
    "headline_point",
    "drawn",
    "parameter_header",
    "parameter_name",
    "per_exit",
    "render_figures",
    "tables",
    "training_figure",
    "write_report",
]

REPORT_FILE = "report.html"
TOLERANCE = 0.005
"""Accuracy drop (absolute, 0.005 = half a point) accepted when a policy has no chosen point."""


def headline_point(
    policy: PolicyResult, reference_accuracy: float, tolerance: float = TOLERANCE
) -> tuple[OperatingPoint, str]:
    """The point a policy is summarised by, and why: the chosen point when there is one, else the
    cheapest sweep point within ``tolerance`` of ``reference_accuracy``, else the most accurate."""
    if policy.chosen is not None:
        return policy.chosen, "chosen"
    near = [p for p in policy.sweep if p.accuracy >= reference_accuracy - tolerance]
    if near:
        why = f"cheapest sweep point within {100 * tolerance:g} pt of the final exit"
        return min(near, key=lambda p: (p.mean_flops, -p.accuracy)), why
    return max(policy.sweep, key=lambda p: (p.accuracy, -p.mean_flops)), "most accurate sweep point"


def per_exit(policy: PolicyResult) -> bool:
    """Whether the rule has one threshold per side exit (its points carry ``thresholds``)."""
    return any(p.thresholds is not None for p in (*policy.sweep, *policy.pareto))


def drawn(r: EfficiencyResult) -> dict[str, PolicyResult]:
    """The policies with sweep points, in order: the ones the figures draw (and colour)."""
    return {name: policy for name, policy in r.policies.items() if policy.sweep}


def parameter_name(name: str, policy: PolicyResult) -> str:
    """What the rule's ``threshold`` holds: ``policy.parameter`` when the study recorded it, else
    ``"patience"`` for a patience rule, ``"target"`` for a per-exit threshold rule (whose sweep
    value is the accuracy target or tolerance its thresholds were fitted for), ``"threshold"``."""
    if policy.parameter:
        return policy.parameter
    if name.startswith("patience"):
        return "patience"
    return "target" if per_exit(policy) else "threshold"


def parameter_header(name: str, policy: PolicyResult) -> str:
    """A table header for the sweep value: ``"Threshold t"``, ``"Patience t"``, ..."""
    word = parameter_name(name, policy)
    return f"{word[:1].upper()}{word[1:]} t"


# ------------------------------------------------------------------------------------- figures


def _exit_ticks(r: EfficiencyResult) -> list[str]:
    last = len(r.exits) - 1
    return [
        f"exit {e.exit}{' (final)' if i == last else ''}\n{e.block}" for i, e in enumerate(r.exits)
    ]


def _draw_cost_bars(ax: Axes, r: EfficiencyResult) -> None:
    c = r.costs
    backbone, path = float(c.backbone_flops), np.asarray(c.path_flops, dtype=float)
    scale, unit = fmt.flops_unit(max(path.max(), backbone))
    stages = np.cumsum(c.stage_flops) / scale
    own = np.asarray(c.exit_flops, dtype=float) / scale
    earlier = np.concatenate([[0.0], np.cumsum(own)[:-1]])
    x = np.arange(len(path))
    ax.bar(x, stages, 0.6, color=plot.STAGE_COLOR, label="backbone stages up to the exit")
    ax.bar(
        x, earlier, 0.6, bottom=stages, color=plot.EARLIER_HEAD_COLOR, label="earlier exit heads"
    )
    ax.bar(
        x, own, 0.6, bottom=stages + earlier, color=plot.OWN_HEAD_COLOR, label="this exit's head"
    )
    label = f"plain backbone: {fmt.number(backbone / scale)} {unit}"
    ax.axhline(backbone / scale, color=plot.BACKBONE_COLOR, ls="--", lw=1.2, label=label)
    for xi, p in zip(x, path, strict=True):
        text = f"{fmt.number(p / scale)} {unit}\n{fmt.pct(p / backbone, 0)} of backbone"
        plot.note(ax, text, (xi, p / scale), (0, 4), ha="center", va="bottom", path_effects=None)
    ax.set_ylim(0, max(path.max(), backbone) / scale * 1.25)
    ax.set_xticks(x, _exit_ticks(r))
    ax.set_ylabel(f"FLOPs to reach the exit ({unit})")
    right = ax.secondary_yaxis(
        "right", functions=(partial(np.multiply, 0.5), partial(np.multiply, 2.0))
    )
    right.set_ylabel(f"MACs ({unit.replace('FLOPs', 'MACs')}); FLOPs = 2 x MACs")
    ax.set_title("FLOPs per image to reach each exit (batch size 1)")
    ax.legend(loc="upper left", frameon=False)
    ax.grid(axis="x", visible=False)


def _draw_exit_accuracy(ax: Axes, r: EfficiencyResult) -> None:
    acc = np.array([100.0 * e.accuracy for e in r.exits])
    x = np.arange(len(acc))
    ax.plot(x, acc, color="#999999", lw=1, zorder=1)
    colors = plot.exit_colors(len(acc))
    ax.scatter(x, acc, s=90, c=colors, edgecolors="black", linewidths=0.6, zorder=3)
    for xi, a in zip(x, acc, strict=True):
        last = xi == len(acc) - 1
        plot.note(
            ax,
            f"{a:.1f}%",
            (xi, a),
            (-9 if last else 9, -4),
            ha=("right" if last else "left"),
            va="top",
        )
    bb, orc = 100.0 * r.backbone.accuracy, 100.0 * r.oracle.accuracy
    ax.axhline(bb, color=plot.BACKBONE_COLOR, ls="--", lw=1.2, label=f"plain backbone: {bb:.1f}%")
    label = f"oracle (first correct exit): {orc:.1f}%"
    ax.axhline(orc, color=plot.ORACLE_COLOR, ls=":", lw=1.5, label=label)
    low = min(acc.min(), bb)
    ax.set_ylim(max(0.0, low - max(5.0, 0.15 * (100 - low))), min(101.0, orc + 4.0))
    ax.set_xlim(-0.5, len(acc) - 0.5)
    ax.set_xticks(x, _exit_ticks(r))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy when every image leaves at that exit")
    ax.legend(loc="lower right", frameon=False)


def exit_costs_figure(r: EfficiencyResult) -> Figure:
    """Fig. 3: FLOPs to reach each exit (stacked by origin) next to each exit's accuracy."""
    fig, axes = plot.subplots(1, 2, (13, 5), width_ratios=[1.35, 1])
    _draw_cost_bars(axes[0, 0], r)
    _draw_exit_accuracy(axes[0, 1], r)
    return fig


class _Point(Protocol):
    @property
    def accuracy(self) -> float: ...
    @property
    def flops_fraction(self) -> float: ...


def _xy(p: _Point) -> tuple[float, float]:
    return 100.0 * p.flops_fraction, 100.0 * p.accuracy


def _all_points(r: EfficiencyResult) -> list[tuple[float, float]]:
    pts = [_xy(p) for pol in r.policies.values() for p in pol.sweep]
    pts += [(100.0 * e.path_fraction, 100.0 * e.accuracy) for e in r.exits]
    pts += [_xy(r.oracle), (100.0, 100.0 * r.backbone.accuracy)]
    return pts


_EXIT_DOT: dict[str, Any] = {
    "marker": "o",
    "ms": 7,
    "color": plot.EXIT_POINT_COLOR,
    "mec": "black",
    "mew": 0.5,
}
_BACKBONE_DOT: dict[str, Any] = {"marker": "s", "ms": 8, "color": plot.BACKBONE_COLOR}
_ORACLE_DOT: dict[str, Any] = {
    "marker": "*",
    "ms": 15,
    "color": plot.ORACLE_COLOR,
    "mec": "black",
    "mew": 0.6,
}
_RING: dict[str, Any] = {"marker": "o", "ms": 16, "mfc": "none", "mec": "black"}


def _draw_references(ax: Axes, r: EfficiencyResult) -> None:
    for e in r.exits:
        x, y = 100.0 * e.path_fraction, 100.0 * e.accuracy
        ax.plot([x], [y], ls="none", **_EXIT_DOT, zorder=5)
        plot.note(ax, f"exit {e.exit}", (x, y), (5, -11), fontsize=8, color="#444444", zorder=5)
    bb = 100.0 * r.backbone.accuracy
    ax.plot([100.0], [bb], ls="none", **_BACKBONE_DOT, zorder=6)
    ax.axhline(bb, color=plot.BACKBONE_COLOR, lw=0.8, ls="--", alpha=0.6)
    ax.plot(*_xy(r.oracle), ls="none", **_ORACLE_DOT, zorder=6)


def _draw_chosen(ax: Axes, color: str, chosen: OperatingPoint, annotate: bool) -> None:
    x, y = _xy(chosen)
    for edge, lw in ((color, 2.5), ("black", 0.8)):
        ax.plot([x], [y], ls="none", **{**_RING, "mec": edge, "mew": lw}, zorder=6)
    if annotate:
        text = f"chosen t={fmt.threshold(chosen.threshold)}\n{y:.1f}% at {x:.0f}%"
        box = {"boxstyle": "round,pad=0.25", "fc": "white", "ec": color, "lw": 1.2}
        line = {"arrowstyle": "-", "color": "black", "lw": 0.8}
        plot.note(
            ax, text, (x, y), (18, -34), zorder=7, bbox=box, arrowprops=line, path_effects=None
        )


def _zoom(ax: Axes, r: EfficiencyResult) -> None:
    """Close-up from 3 points below the final exit up to the best point."""
    pts = _all_points(r)
    bottom, top = 100.0 * r.backbone.accuracy - 3.0, max(y for _, y in pts)
    xs = [x for x, y in pts if y >= bottom]
    pad_x, pad_y = max(2.0, 0.06 * (max(xs) - min(xs))), max(0.3, 0.08 * (top - bottom))
    ax.set_xlim(min(xs) - pad_x, max(xs) + 2 * pad_x)
    ax.set_ylim(bottom, top + pad_y)


def _annotate_thresholds(ax: Axes, r: EfficiencyResult) -> None:
    """Label Pareto points with their threshold, skipping labels that would overlap."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float]] = []
    for i, policy in enumerate(drawn(r).values()):
        offset = (-4, 6) if i % 2 == 0 else (4, -13)
        for p in sorted(policy.pareto, key=lambda q: q.flops_fraction):
            x, y = _xy(p)
            if not (x0 <= x <= x1 and y0 <= y <= y1):
                continue
            px, py = ax.transData.transform((x, y)) / ax.figure.dpi * 72.0  # in points
            px, py = px + offset[0], py + offset[1]
            if any(abs(px - qx) < 34 and abs(py - qy) < 11 for qx, qy in placed):
                continue
            placed.append((px, py))
            color, ha = plot.policy_style(i)[0], "right" if i % 2 == 0 else "left"
            text = fmt.threshold(p.threshold)
            plot.note(ax, text, (x, y), offset, fontsize=7.5, color=color, ha=ha, zorder=7)


def _draw_tradeoff(ax: Axes, r: EfficiencyResult, zoom: bool) -> None:
    x_end = max(x for x, _ in _all_points(r)) + 2.0
    for i, policy in enumerate(drawn(r).values()):
        color, marker = plot.policy_style(i)
        px, py = plot.pareto_steps([_xy(p) for p in policy.pareto], x_end)
        ax.step(
            px, py, where="post", color=color, lw=2, alpha=0.9, zorder=3, path_effects=plot.OUTLINE
        )
        xy = np.array([_xy(p) for p in policy.sweep]).reshape(-1, 2)  # (points, 2); may be empty
        ax.plot(*xy.T, ls="none", marker=marker, ms=6, color=color, mec="white", mew=0.8, zorder=4)
    _draw_references(ax, r)
    for i, policy in enumerate(drawn(r).values()):
        if policy.chosen is not None:
            _draw_chosen(ax, plot.policy_style(i)[0], policy.chosen, annotate=zoom)
    if zoom:
        _zoom(ax, r)
        _annotate_thresholds(ax, r)
        ax.set_title("Close-up near the final exit's accuracy (labels: threshold t)")
    else:
        ax.set_xlim(0, x_end + 3)
        ax.set_title("Whole sweep")
    ax.set_xlabel("mean FLOPs per image (% of plain backbone)")
    ax.set_ylabel("accuracy (%)")
    scale, unit = fmt.flops_unit(r.costs.backbone_flops)
    k = r.costs.backbone_flops / scale / 100.0
    top = ax.secondary_xaxis(
        "top", functions=(partial(np.multiply, k), partial(np.multiply, 1 / k))
    )
    top.set_xlabel(f"mean FLOPs per image ({unit})")


def _tradeoff_keys(r: EfficiencyResult) -> list:
    keys = [
        plot.key(f"{name}: sweep points + Pareto front", color=c, marker=m, ms=5, lw=2)
        for i, name in enumerate(drawn(r))
        for c, m in [plot.policy_style(i)]
    ]
    keys += [
        plot.key("single exit (everyone leaves there)", ls="none", **_EXIT_DOT),
        plot.key("plain backbone (final exit only)", ls="none", **_BACKBONE_DOT),
        plot.key("oracle (first correct exit)", ls="none", **_ORACLE_DOT),
    ]
    if any(p.chosen is not None for p in r.policies.values()):
        keys.append(plot.key("chosen operating point", ls="none", **_RING))
    return keys


def accuracy_vs_flops_figure(r: EfficiencyResult) -> Figure:
    """Fig. 4: accuracy against mean FLOPs over each policy's thresholds (whole and close-up)."""
    fig, axes = plot.subplots(1, 2, (13, 5.6))
    for ax, zoom in zip(axes[0], (False, True), strict=True):
        _draw_tradeoff(ax, r, zoom)
    keys = _tradeoff_keys(r)
    plot.legend_below(fig, keys, min(len(keys), 3))
    return fig


def _draw_policy_shares(ax: Axes, name: str, policy: PolicyResult) -> None:
    sweep = sorted(policy.sweep, key=lambda p: p.threshold)
    thresholds = [p.threshold for p in sweep]
    labels = [fmt.threshold(t) for t in thresholds]
    x = plot.step_axis(ax, thresholds, labels, f"{parameter_name(name, policy)} t")
    plot.draw_shares(ax, x, [p.exit_shares for p in sweep], [p.flops_fraction for p in sweep])
    chosen = policy.chosen
    match = [xi for xi, t in zip(x, thresholds, strict=True) if chosen and t == chosen.threshold]
    if chosen and match:
        ax.axvline(match[0], color="black", lw=1.2, ls=":")
        box = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "black", "lw": 0.6}
        text = f"chosen t={fmt.threshold(chosen.threshold)}"
        plot.note(ax, text, (match[0], 101), (0, 0), fontsize=8, ha="center", va="bottom", bbox=box)
    lines = textwrap.wrap(policy.label, 60)  # the rule's label under its name, in small print
    ax.set_title("\n".join(lines), loc="left", fontsize=8.5, color="#555555")
    offset = (0, 6 + 11 * len(lines))  # title pad + the label's lines, in points
    style = {"xycoords": "axes fraction", "fontweight": "bold", "path_effects": None}
    plot.note(ax, name, (0, 1), offset, fontsize=11, va="bottom", **style)


def exit_shares_figure(r: EfficiencyResult) -> Figure | None:
    """Where the images leave: each exit's share against the threshold, one panel per policy
    (at most three a row); ``None`` when no policy has a sweep point."""
    shown = drawn(r)
    if not shown:
        return None
    nrows, ncols = plot.grid_shape(len(shown), 3)
    width = {1: 9.0, 2: 12.4}.get(ncols, 13.5)
    fig, axes = plot.subplots(nrows, ncols, (width, 4.2 * nrows + 0.6))
    for ax, (name, policy) in zip(axes.flat, shown.items(), strict=False):
        _draw_policy_shares(ax, name, policy)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    for row in range(nrows):
        axes[row, 0].set_ylabel("images leaving at each exit (%)\nmean FLOPs (% of backbone)")
    labels = [f"exit {e.exit} ({e.block})" for e in r.exits]
    plot.shares_legend(fig, labels, 5 if ncols > 1 else 3)
    return fig


def _percent_at(values: Sequence[float | None] | None, i: int) -> float:
    value = values[i] if values and i < len(values) else None
    return math.nan if value is None else 100.0 * value


def training_figure(r: EfficiencyResult) -> Figure | None:
    """Training loss and each exit's validation accuracy per epoch; ``None`` without a history."""
    history = r.training.history if r.training is not None else []
    if not history:
        return None
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig, axes = plot.subplots(1, 2, (12, 4.2))
    ax_loss, ax_acc = axes[0]
    loss = [h.get("train_loss", math.nan) for h in history]
    ax_loss.plot(epochs, loss, color=plot.POLICY_COLORS[0], marker="o", ms=4, lw=2)
    ax_loss.set(ylabel="training loss", title="Training loss")
    for i, (e, color) in enumerate(zip(r.exits, plot.exit_colors(len(r.exits)), strict=True)):
        acc = [_percent_at(h.get("val_accuracy"), i) for h in history]
        ax_acc.plot(
            epochs, acc, color=color, marker="o", ms=4, lw=2, label=f"exit {e.exit} ({e.block})"
        )
    ax_acc.set(ylabel="validation accuracy (%)", title="Validation accuracy of each exit")
    ax_acc.legend(loc="lower right", frameon=False)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def render_figures(r: EfficiencyResult) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` in display order; ``reliability.png`` only with a calibration,
    ``training.png`` only with a history."""
    shown = (
        exit_costs_figure,
        accuracy_vs_flops_figure,
        exit_shares_figure,
        reliability_figure,
        training_figure,
    )
    names = (
        "exit_costs.png",
        "accuracy_vs_flops.png",
        "exit_shares.png",
        "reliability.png",
        "training.png",
    )
    return plot.render_figures({n: partial(b, r) for n, b in zip(names, shown, strict=True)})


# -------------------------------------------------------------------------------------- tables


def _points_csv(points: list[OperatingPoint], num_exits: int, per_exit: bool) -> bytes:
    """One row per point; a per-exit rule adds its thresholds, one column per side exit."""
    header = ["threshold", "accuracy", "mean_flops", "mean_macs", "flops_fraction"]
    header += [f"share_exit_{i}" for i in range(num_exits)]
    header += [f"threshold_exit_{i}" for i in range(num_exits - 1)] if per_exit else []
    rows = [
        [p.threshold, p.accuracy, p.mean_flops, p.mean_macs, p.flops_fraction, *p.exit_shares]
        + (list(p.thresholds or [""] * (num_exits - 1)) if per_exit else [])
        for p in points
    ]
    return csv_bytes(header, rows)


def tables(r: EfficiencyResult) -> dict[str, bytes]:
    """``exits.csv``, then ``sweep_<policy>.csv`` and ``pareto_<policy>.csv`` per policy, then
    ``calibration.csv`` and ``reliability.csv`` with a calibration."""
    header = ["exit", "block", "accuracy", "path_flops", "path_macs", "path_fraction"]
    rows = [
        [e.exit, e.block, e.accuracy, e.path_flops, m, e.path_fraction]
        for e, m in zip(r.exits, r.costs.path_macs, strict=True)
    ]
    out = {"exits.csv": csv_bytes(header, rows)}
    for name, policy in r.policies.items():
        for kind in ("sweep", "pareto"):
            points = getattr(policy, kind)
            csv = _points_csv(points, r.num_exits, per_exit(policy))
            out[f"{kind}_{fmt.safe_name(name)}.csv"] = csv
    return {**out, **calibration_tables(r)}


# ---------------------------------------------------------------------------------------- page


class _PolicyView(NamedTuple):
    """A policy as the page shows it: its headline point (and why), its table's rows, what its
    threshold is called and whether it has per-exit thresholds."""

    name: str
    policy: PolicyResult
    point: OperatingPoint
    reason: str
    pareto: list[OperatingPoint]
    header: str
    per_exit: bool


def _training(r: EfficiencyResult) -> list[tuple[str, str]]:
    t = r.training
    if t is None:
        return []
    items = [("Training time", fmt.duration(t.seconds)), ("Epochs", str(t.epochs))]
    more = {
        "Device": t.device,
        "Precision": t.precision,
        "Threads": t.threads,
        "Machine": t.machine,
    }
    items += [(k, fmt.listing(v)) for k, v in more.items() if v not in (None, "", [])]
    last = t.history[-1].get("val_accuracy") if t.history else None
    if last:
        accs = " / ".join(fmt.pct(a) for a in last if a is not None)
        items.append(("Last epoch, validation accuracy per exit", accs))
    return items


def _page(r: EfficiencyResult, figures: dict[str, bytes]) -> bytes:
    policies, shown = [], drawn(r)
    for name, policy in shown.items():
        point, reason = headline_point(policy, r.backbone.accuracy)
        pareto = sorted(policy.pareto, key=lambda p: p.mean_flops)
        chosen = policy.chosen
        if chosen is not None and all(p.threshold != chosen.threshold for p in pareto):
            pareto.append(chosen)
        head = parameter_header(name, policy)
        policies.append(_PolicyView(name, policy, point, reason, pareto, head, per_exit(policy)))
    cal = r.calibration
    scale, unit = fmt.flops_unit(r.costs.backbone_flops)
    return render_page(
        REPORT_FILE,
        title=r.title,
        r=r,
        ref=r.backbone.accuracy,
        figures=embed(figures),
        policies=policies,
        scale=scale,
        prefix=unit.removesuffix("FLOPs"),
        colors=plot.exit_colors(r.num_exits),
        overhead=r.costs.path_flops[-1] / r.costs.backbone_flops - 1.0,
        training=_training(r),
        calibration=cal,
        ece_header=ece_header(cal) if cal is not None else [],
        ece_rows=ece_rows(cal) if cal is not None else [],
        empty=[name for name in r.policies if name not in shown],
        notes=r.notes,
    )


def write_report(result: EfficiencyResult, out_dir: str | Path) -> Path:
    """Write the figures, the CSV tables and ``report.html`` into ``out_dir``; returns the
    page's path. All is rendered before the first write: a failure writes nothing."""
    figures = render_figures(result)
    page = _page(result, figures)
    return write_files(out_dir, {**tables(result), **figures, REPORT_FILE: page})[-1]
