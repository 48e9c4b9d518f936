"""Figures of an evaluation dictionary, rendered off-screen to PNG bytes.

Every figure builder takes the (validated) evaluation dictionary and returns an open
:class:`~matplotlib.figure.Figure`; :func:`render_figures` turns them into PNG bytes and closes
them, so no figure outlives a call. FLOPs follow the package convention (FLOPs = 2 x MACs) and
every axis says which of the two it shows.

Palette: the Okabe-Ito colours for policies and markers, ``viridis`` (ordered, shallow to deep)
for exits; both stay distinguishable with the common forms of colour blindness.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.patheffects as pe  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "DPI",
    "FIGURE_FILES",
    "accuracy_vs_flops_figure",
    "exit_colors",
    "exit_costs_figure",
    "exit_shares_figure",
    "figure_png",
    "flops_unit",
    "format_threshold",
    "render_figures",
    "training_figure",
]

DPI = 120
POLICY_COLORS = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#F0E442")
ORACLE_COLOR = "#CC79A7"
BACKBONE_COLOR = "#000000"
EXIT_POINT_COLOR = "#7F7F7F"
STAGE_COLOR = "#56B4E9"
EARLIER_HEAD_COLOR = "#F0E442"
OWN_HEAD_COLOR = "#E69F00"
POLICY_MARKERS = ("o", "s", "^", "D", "v", "P")

FIGURE_FILES = ("exit_costs.png", "accuracy_vs_flops.png", "exit_shares.png", "training.png")

_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
}
_OUTLINE = [pe.withStroke(linewidth=3, foreground="white")]


def exit_colors(num_exits: int) -> list[str]:
    """Colours of exits ``0..num_exits-1``, shallow (dark) to deep (light), as hex strings.

    Args:
        num_exits: how many exits to colour.

    Returns:
        One ``#rrggbb`` colour per exit, sampled from ``viridis``.
    """
    cmap = matplotlib.colormaps["viridis"]
    stops = np.linspace(0.05, 0.85, max(num_exits, 1))
    return [to_hex(cmap(s)) for s in stops][:num_exits]


def flops_unit(largest: float) -> tuple[float, str]:
    """A readable unit for FLOPs values up to ``largest``.

    Args:
        largest: the largest value that will be shown.

    Returns:
        ``(scale, unit)``: divide raw FLOPs by ``scale`` to express them in ``unit``.
    """
    if largest >= 2e10:
        return 1e9, "GFLOPs"
    if largest >= 1e6:
        return 1e6, "MFLOPs"
    if largest >= 1e3:
        return 1e3, "kFLOPs"
    return 1.0, "FLOPs"


def _pct_label(fraction: float) -> str:
    value = 100.0 * fraction
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


def _exit_ticklabels(evaluation: Mapping[str, Any]) -> list[str]:
    exits = evaluation["exits"]
    labels = []
    for i, ex in enumerate(exits):
        final = " (final)" if i == len(exits) - 1 else ""
        labels.append(f"exit {ex['exit']}{final}\n{ex['block']}")
    return labels


# --------------------------------------------------------------------------- exit costs (Fig. 3)


def _cost_segments(costs: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backbone stages, heads passed on the way, and the exit's own head, per exit (raw FLOPs)."""
    stages = np.cumsum(np.asarray(costs["stage_flops"], dtype=float))
    heads = np.asarray(costs["exit_flops"], dtype=float)
    earlier = np.concatenate([[0.0], np.cumsum(heads)[:-1]])
    return stages, earlier, heads


def _draw_cost_bars(ax: Axes, evaluation: Mapping[str, Any]) -> None:
    costs = evaluation["costs"]
    backbone = float(costs["backbone_flops"])
    path = np.asarray(costs["path_flops"], dtype=float)
    scale, unit = flops_unit(max(path.max(), backbone))
    stages, earlier, own = (seg / scale for seg in _cost_segments(costs))
    x = np.arange(len(path))
    ax.bar(x, stages, 0.6, color=STAGE_COLOR, label="backbone stages up to the exit")
    ax.bar(x, earlier, 0.6, bottom=stages, color=EARLIER_HEAD_COLOR, label="earlier exit heads")
    ax.bar(x, own, 0.6, bottom=stages + earlier, color=OWN_HEAD_COLOR, label="this exit's head")
    ax.axhline(
        backbone / scale,
        color=BACKBONE_COLOR,
        ls="--",
        lw=1.2,
        label=f"plain backbone: {backbone / scale:,.1f} {unit}",
    )
    for xi, p in zip(x, path, strict=True):
        ax.annotate(
            f"{p / scale:,.1f} {unit}\n{_pct_label(p / backbone)} of backbone",
            (xi, p / scale),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylim(0, max(path.max(), backbone) / scale * 1.25)
    ax.set_xticks(x, _exit_ticklabels(evaluation))
    ax.set_ylabel(f"FLOPs to reach the exit ({unit})")
    mac_unit = unit.replace("FLOPs", "MACs")
    right = ax.secondary_yaxis("right", functions=(lambda v: v / 2.0, lambda v: v * 2.0))
    right.set_ylabel(f"MACs ({mac_unit}); FLOPs = 2 x MACs")
    ax.set_title("FLOPs per image to reach each exit (batch size 1)")
    ax.legend(loc="upper left", frameon=False)
    ax.grid(axis="x", visible=False)


def _draw_exit_accuracy(ax: Axes, evaluation: Mapping[str, Any]) -> None:
    exits = evaluation["exits"]
    acc = np.array([100.0 * ex["accuracy"] for ex in exits])
    x = np.arange(len(acc))
    colors = exit_colors(len(acc))
    ax.plot(x, acc, color="#999999", lw=1, zorder=1)
    ax.scatter(x, acc, s=90, c=colors, edgecolors="black", linewidths=0.6, zorder=3)
    for xi, a in zip(x, acc, strict=True):
        last = xi == len(acc) - 1
        ax.annotate(
            f"{a:.1f}%",
            (xi, a),
            xytext=(-9 if last else 9, -4),
            textcoords="offset points",
            ha="right" if last else "left",
            va="top",
            fontsize=9,
            path_effects=_OUTLINE,
        )
    backbone_acc = 100.0 * evaluation["backbone"]["accuracy"]
    oracle_acc = 100.0 * evaluation["oracle"]["accuracy"]
    ax.axhline(
        backbone_acc,
        color=BACKBONE_COLOR,
        ls="--",
        lw=1.2,
        label=f"plain backbone: {backbone_acc:.1f}%",
    )
    ax.axhline(
        oracle_acc,
        color=ORACLE_COLOR,
        ls=":",
        lw=1.5,
        label=f"oracle (first correct exit): {oracle_acc:.1f}%",
    )
    low = min(acc.min(), backbone_acc)
    ax.set_ylim(max(0.0, low - max(5.0, 0.15 * (100 - low))), min(101.0, oracle_acc + 4.0))
    ax.set_xlim(-0.5, len(acc) - 0.5)
    ax.set_xticks(x, _exit_ticklabels(evaluation))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy when every image leaves at that exit")
    ax.legend(loc="lower right", frameon=False)


def exit_costs_figure(evaluation: Mapping[str, Any]) -> Figure:
    """Fig. 3: FLOPs to reach each exit (stacked by origin) next to each exit's accuracy.

    Args:
        evaluation: a validated evaluation dictionary.

    Returns:
        The open figure.
    """
    with plt.rc_context(_STYLE):
        fig, (ax_cost, ax_acc) = plt.subplots(
            1, 2, figsize=(13, 5), width_ratios=[1.35, 1], layout="constrained"
        )
        _draw_cost_bars(ax_cost, evaluation)
        _draw_exit_accuracy(ax_acc, evaluation)
    return fig


# ------------------------------------------------------------------ accuracy vs FLOPs (Fig. 4)


def _pareto_steps(pareto: Sequence[Mapping[str, Any]], x_end: float) -> tuple[list, list]:
    """Step coordinates (in % of backbone, %) of a Pareto front, extended right to ``x_end``."""
    pts = sorted(pareto, key=lambda p: (p["flops_fraction"], -p["accuracy"]))
    xs = [100.0 * p["flops_fraction"] for p in pts]
    ys = [100.0 * p["accuracy"] for p in pts]
    if xs and x_end > xs[-1]:
        xs.append(x_end)
        ys.append(ys[-1])
    return xs, ys


def _draw_policy(ax: Axes, i: int, name: str, policy: Mapping[str, Any], x_end: float) -> None:
    color = POLICY_COLORS[i % len(POLICY_COLORS)]
    marker = POLICY_MARKERS[i % len(POLICY_MARKERS)]
    sweep = sorted(policy["sweep"], key=lambda p: p["flops_fraction"])
    xs = [100.0 * p["flops_fraction"] for p in sweep]
    ys = [100.0 * p["accuracy"] for p in sweep]
    px, py = _pareto_steps(policy.get("pareto") or [], x_end)
    ax.step(px, py, where="post", color=color, lw=2, alpha=0.9, zorder=3, path_effects=_OUTLINE)
    ax.plot(xs, ys, ls="none", marker=marker, ms=6, color=color, mec="white", mew=0.8, zorder=4)


def _draw_chosen(ax: Axes, i: int, chosen: Mapping[str, Any], annotate: bool) -> None:
    color = POLICY_COLORS[i % len(POLICY_COLORS)]
    x, y = 100.0 * chosen["flops_fraction"], 100.0 * chosen["accuracy"]
    ax.scatter([x], [y], s=260, facecolors="none", edgecolors=color, linewidths=2.5, zorder=6)
    ax.scatter([x], [y], s=260, facecolors="none", edgecolors="black", linewidths=0.8, zorder=6)
    if annotate:
        ax.annotate(
            f"chosen t={format_threshold(chosen['threshold'])}\n{y:.1f}% at {x:.0f}%",
            (x, y),
            xytext=(18, -34),
            textcoords="offset points",
            fontsize=9,
            color="black",
            arrowprops={"arrowstyle": "-", "color": "black", "lw": 0.8},
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": color, "lw": 1.2},
            zorder=7,
        )


def _draw_references(ax: Axes, evaluation: Mapping[str, Any], label_exits: bool) -> None:
    for ex in evaluation["exits"]:
        x, y = 100.0 * ex["path_fraction"], 100.0 * ex["accuracy"]
        ax.scatter([x], [y], s=45, color=EXIT_POINT_COLOR, edgecolors="black", lw=0.5, zorder=5)
        if label_exits:
            ax.annotate(
                f"exit {ex['exit']}",
                (x, y),
                xytext=(5, -11),
                textcoords="offset points",
                fontsize=8,
                color="#444444",
                path_effects=_OUTLINE,
                zorder=5,
            )
    bb = evaluation["backbone"]
    ax.scatter([100.0], [100.0 * bb["accuracy"]], marker="s", s=70, color=BACKBONE_COLOR, zorder=6)
    ax.axhline(100.0 * bb["accuracy"], color=BACKBONE_COLOR, lw=0.8, ls="--", alpha=0.6)
    orc = evaluation["oracle"]
    ax.scatter(
        [100.0 * orc["flops_fraction"]],
        [100.0 * orc["accuracy"]],
        marker="*",
        s=220,
        color=ORACLE_COLOR,
        edgecolors="black",
        linewidths=0.6,
        zorder=6,
    )


def _all_points(evaluation: Mapping[str, Any]) -> list[tuple[float, float]]:
    pts = [
        (100.0 * p["flops_fraction"], 100.0 * p["accuracy"])
        for pol in evaluation["policies"].values()
        for p in pol["sweep"]
    ]
    pts += [(100.0 * e["path_fraction"], 100.0 * e["accuracy"]) for e in evaluation["exits"]]
    orc = evaluation["oracle"]
    pts.append((100.0 * orc["flops_fraction"], 100.0 * orc["accuracy"]))
    pts.append((100.0, 100.0 * evaluation["backbone"]["accuracy"]))
    return pts


def _zoom_limits(evaluation: Mapping[str, Any]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits of the close-up: from 3 points below the final exit up to the best point."""
    pts = _all_points(evaluation)
    bottom = 100.0 * evaluation["backbone"]["accuracy"] - 3.0
    top = max(y for _, y in pts)
    xs = [x for x, y in pts if y >= bottom]
    span = max(xs) - min(xs)
    pad_x, pad_y = max(2.0, 0.06 * span), max(0.3, 0.08 * (top - bottom))
    return (min(xs) - pad_x, max(xs) + 2 * pad_x), (bottom, top + pad_y)


def _annotate_thresholds(ax: Axes, evaluation: Mapping[str, Any]) -> None:
    """Label the Pareto points of each policy with their threshold (close-up panel only).

    A label is skipped when it would land on one already placed, so clusters stay legible.
    """
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float]] = []
    for i, policy in enumerate(evaluation["policies"].values()):
        color = POLICY_COLORS[i % len(POLICY_COLORS)]
        offset = (-4, 6) if i % 2 == 0 else (4, -13)
        for p in sorted(policy.get("pareto") or [], key=lambda q: q["flops_fraction"]):
            x, y = 100.0 * p["flops_fraction"], 100.0 * p["accuracy"]
            if not (x0 <= x <= x1 and y0 <= y <= y1):
                continue
            px, py = ax.transData.transform((x, y)) / ax.figure.dpi * 72.0  # points
            px, py = px + offset[0], py + offset[1]
            if any(abs(px - qx) < 34 and abs(py - qy) < 11 for qx, qy in placed):
                continue
            placed.append((px, py))
            ax.annotate(
                format_threshold(p["threshold"]),
                (x, y),
                xytext=offset,
                textcoords="offset points",
                fontsize=7.5,
                color=color,
                ha="right" if i % 2 == 0 else "left",
                path_effects=_OUTLINE,
                zorder=7,
            )


def _legend_handles(evaluation: Mapping[str, Any]) -> list[Line2D]:
    handles = []
    for i, name in enumerate(evaluation["policies"]):
        color = POLICY_COLORS[i % len(POLICY_COLORS)]
        marker = POLICY_MARKERS[i % len(POLICY_MARKERS)]
        handles.append(
            Line2D(
                [],
                [],
                color=color,
                marker=marker,
                ms=5,
                lw=2,
                label=f"{name}: sweep points + Pareto front",
            )
        )
    handles += [
        Line2D(
            [],
            [],
            ls="none",
            marker="o",
            color=EXIT_POINT_COLOR,
            mec="black",
            ms=7,
            label="single exit (everyone leaves there)",
        ),
        Line2D(
            [],
            [],
            ls="none",
            marker="s",
            color=BACKBONE_COLOR,
            ms=7,
            label="plain backbone (final exit only)",
        ),
        Line2D(
            [],
            [],
            ls="none",
            marker="*",
            color=ORACLE_COLOR,
            mec="black",
            ms=13,
            label="oracle (first correct exit)",
        ),
    ]
    if any(p.get("chosen") for p in evaluation["policies"].values()):
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="o",
                mfc="none",
                mec="black",
                ms=13,
                label="chosen operating point",
            )
        )
    return handles


def _draw_tradeoff_panel(ax: Axes, evaluation: Mapping[str, Any], zoom: bool) -> None:
    x_end = max(x for x, _ in _all_points(evaluation)) + 2.0
    for i, (name, policy) in enumerate(evaluation["policies"].items()):
        _draw_policy(ax, i, name, policy, x_end)
    _draw_references(ax, evaluation, label_exits=True)
    for i, policy in enumerate(evaluation["policies"].values()):
        if policy.get("chosen"):
            _draw_chosen(ax, i, policy["chosen"], annotate=zoom)
    if zoom:
        xlim, ylim = _zoom_limits(evaluation)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        _annotate_thresholds(ax, evaluation)
        ax.set_title("Close-up near the final exit's accuracy (labels: threshold t)")
    else:
        ax.set_xlim(0, x_end + 3)
        ax.set_title("Whole sweep")
    ax.set_xlabel("mean FLOPs per image (% of plain backbone)")
    ax.set_ylabel("accuracy (%)")
    _add_mflops_axis(ax, float(evaluation["costs"]["backbone_flops"]))


def _add_mflops_axis(ax: Axes, backbone_flops: float) -> None:
    scale, unit = flops_unit(backbone_flops)
    k = backbone_flops / scale / 100.0
    top = ax.secondary_xaxis("top", functions=(lambda p: p * k, lambda m: m / k))
    top.set_xlabel(f"mean FLOPs per image ({unit})")


def accuracy_vs_flops_figure(evaluation: Mapping[str, Any]) -> Figure:
    """Fig. 4: accuracy against mean FLOPs used, swept over each policy's threshold.

    Args:
        evaluation: a validated evaluation dictionary.

    Returns:
        The open figure: the whole sweep on the left, a close-up of the useful corner right.
    """
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), layout="constrained")
        for ax, zoom in zip(axes, (False, True), strict=True):
            _draw_tradeoff_panel(ax, evaluation, zoom)
        handles = _legend_handles(evaluation)
        fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 3), frameon=False
        )
    return fig


# --------------------------------------------------------------------------------- exit shares


def format_threshold(threshold: Any) -> str:
    """``0.9`` -> ``"0.9"``; a per-exit list ``[0.9, 0.8]`` -> ``"0.9/0.8"``.

    Args:
        threshold: a policy threshold, a number or one number per exit.

    Returns:
        The threshold as short text.
    """
    if isinstance(threshold, int | float):
        return f"{threshold:g}"
    if isinstance(threshold, Sequence) and not isinstance(threshold, str):
        return "/".join(format_threshold(t) for t in threshold)
    return str(threshold)


def _threshold_positions(thresholds: Sequence[Any]) -> tuple[np.ndarray, bool]:
    """x positions for thresholds: their values when evenly spread, else their rank.

    Returns:
        ``(x, by_value)``.
    """
    numeric = all(isinstance(t, int | float) and math.isfinite(t) for t in thresholds)
    if numeric and len(thresholds) >= 2:
        gaps = np.diff(np.asarray(thresholds, dtype=float))
        if gaps.min() > 0 and gaps.max() / gaps.min() <= 4.0:
            return np.asarray(thresholds, dtype=float), True
    return np.arange(len(thresholds), dtype=float), False


def _thinned(count: int, most: int) -> list[int]:
    """At most about ``most`` evenly spread indices of ``range(count)``, first and last included."""
    if count <= most:
        return list(range(count))
    return sorted({round(k * (count - 1) / (most - 1)) for k in range(most)})


def _sorted_sweep(sweep: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if all(isinstance(p["threshold"], int | float) for p in sweep):
        return sorted(sweep, key=lambda p: p["threshold"])
    return list(sweep)


def _draw_shares(ax: Axes, name: str, policy: Mapping[str, Any], num_exits: int) -> None:
    sweep = _sorted_sweep(policy["sweep"])
    if len(sweep) == 1:  # a lone point: draw it as a narrow band
        sweep = [sweep[0], sweep[0]]
    x, by_value = _threshold_positions([p["threshold"] for p in sweep])
    if len(x) == 2 and x[0] == x[1]:
        x = x + np.array([-0.5, 0.5])
    shares = np.array([[100.0 * s for s in p["exit_shares"]] for p in sweep]).T
    ax.stackplot(x, shares, colors=exit_colors(num_exits), alpha=0.9, edgecolor="white", lw=0.5)
    flops = [100.0 * p["flops_fraction"] for p in sweep]
    ax.plot(x, flops, color="black", lw=2, ls="--", marker=".", path_effects=_OUTLINE)
    chosen = policy.get("chosen")
    if chosen:
        t = chosen["threshold"]
        match = [xi for xi, p in zip(x, sweep, strict=True) if p["threshold"] == t]
        if match:
            ax.axvline(match[0], color="black", lw=1.2, ls=":")
            ax.annotate(
                f"chosen t={format_threshold(chosen['threshold'])}",
                (match[0], 101),
                fontsize=8,
                ha="center",
                va="bottom",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "black", "lw": 0.6},
            )
    if not by_value:
        ticks = _thinned(len(sweep), 10)
        ax.set_xticks(
            x[ticks],
            [format_threshold(sweep[k]["threshold"]) for k in ticks],
            rotation=45,
            ha="right",
        )
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(0, max(107.0, max(flops) + 5))
    ax.set_xlabel("threshold t" + ("" if by_value else " (one step per sweep point)"))
    ax.set_ylabel("images leaving at each exit (%)\nmean FLOPs (% of plain backbone)")
    label = policy.get("label") or ""
    ax.set_title(f"{name}" + (f": {label}" if label else ""))
    ax.grid(False)


def exit_shares_figure(evaluation: Mapping[str, Any]) -> Figure:
    """Where the images leave: the share of each exit against the threshold, per policy.

    Args:
        evaluation: a validated evaluation dictionary.

    Returns:
        The open figure, one panel per policy, mean FLOPs (% of backbone) overlaid.
    """
    policies = evaluation["policies"]
    num_exits = len(evaluation["exits"])
    with plt.rc_context(_STYLE):
        width = max(9.0, 6.2 * len(policies))
        fig, axes = plt.subplots(
            1, len(policies), figsize=(width, 4.8), layout="constrained", squeeze=False
        )
        for ax, (name, policy) in zip(axes[0], policies.items(), strict=True):
            _draw_shares(ax, name, policy, num_exits)
        handles = [
            Patch(color=c, label=lab)
            for c, lab in zip(exit_colors(num_exits), _exit_legend_labels(evaluation), strict=True)
        ]
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                lw=2,
                ls="--",
                marker=".",
                label="mean FLOPs (% of plain backbone)",
            )
        )
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), 5 if len(policies) > 1 else 3),
            frameon=False,
        )
    return fig


def _exit_legend_labels(evaluation: Mapping[str, Any]) -> list[str]:
    return [f"exit {ex['exit']} ({ex['block']})" for ex in evaluation["exits"]]


# ------------------------------------------------------------------------------------ training


def _history(evaluation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    training = evaluation.get("training") or {}
    return list(training.get("history") or [])


def training_figure(evaluation: Mapping[str, Any]) -> Figure | None:
    """Training curves: train loss and each exit's validation accuracy per epoch.

    Args:
        evaluation: a validated evaluation dictionary.

    Returns:
        The open figure, or ``None`` when the dictionary has no training history.
    """
    history = _history(evaluation)
    if not history:
        return None
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    with plt.rc_context(_STYLE):
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
        _draw_loss(ax_loss, epochs, history)
        _draw_val_accuracy(ax_acc, epochs, history, evaluation)
    return fig


def _draw_loss(ax: Axes, epochs: list, history: list[Mapping[str, Any]]) -> None:
    loss = [h.get("train_loss", math.nan) for h in history]
    ax.plot(epochs, loss, color=POLICY_COLORS[0], marker="o", ms=4, lw=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Training loss")


def _draw_val_accuracy(
    ax: Axes, epochs: list, history: list[Mapping[str, Any]], evaluation: Mapping[str, Any]
) -> None:
    num_exits = len(evaluation["exits"])
    colors = exit_colors(num_exits)
    labels = _exit_legend_labels(evaluation)
    for i in range(num_exits):
        acc = [_exit_value(h.get("val_accuracy"), i) for h in history]
        ax.plot(epochs, acc, color=colors[i], marker="o", ms=4, lw=2, label=labels[i])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Validation accuracy of each exit")
    ax.legend(loc="lower right", frameon=False)


def _exit_value(values: Sequence[float] | None, i: int) -> float:
    if not values or i >= len(values) or values[i] is None:
        return math.nan
    return 100.0 * float(values[i])


# ------------------------------------------------------------------------------------- render


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` at :data:`DPI`; the figure is closed afterwards, even on error.

    Args:
        fig: an open figure.

    Returns:
        The PNG file contents.
    """
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
        return buf.getvalue()
    finally:
        plt.close(fig)


def _builders() -> list[tuple[str, Callable[[Mapping[str, Any]], Figure | None]]]:
    # Looked up at call time so a replaced module attribute is honoured.
    return list(
        zip(
            FIGURE_FILES,
            (exit_costs_figure, accuracy_vs_flops_figure, exit_shares_figure, training_figure),
            strict=True,
        )
    )


def render_figures(evaluation: Mapping[str, Any]) -> dict[str, bytes]:
    """Render every figure the evaluation supports.

    Args:
        evaluation: a validated evaluation dictionary.

    Returns:
        ``{file name: PNG bytes}`` in display order; ``training.png`` only with a history.

    Raises:
        Exception: whatever a figure builder raises; figures opened meanwhile are closed.
    """
    before = set(plt.get_fignums())
    try:
        out: dict[str, bytes] = {}
        for name, build in _builders():
            fig = build(evaluation)
            if fig is not None:
                out[name] = figure_png(fig)
        return out
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
