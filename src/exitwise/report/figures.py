"""What every figure of every report shares: the style, the colours, figure -> PNG, common panels.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`, never
``pyplot``): rendering selects no backend, registers no figure and leaves nothing open. The style
applies only while :func:`render_figures` runs (:func:`matplotlib.rc_context`).

Palette: the Okabe-Ito colours for policies and reference markers (then Paul Tol's wine, olive and
indigo: eight rules before a colour repeats; Okabe-Ito's yellow is too faint for a line on white),
each rule with its own marker too (nine markers: a colour and marker pair repeats after 72
rules); ``viridis`` (ordered, dark = shallow) for exits. All stay distinguishable with the common
forms of colour blindness.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.patheffects as pe
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

DPI = 120
POLICY_COLORS = (
    "#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#882255", "#999933", "#332288",
)  # fmt: skip
POLICY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<")  # one more than colours
ORACLE_COLOR = "#CC79A7"
BACKBONE_COLOR = "#000000"
EXIT_POINT_COLOR = "#7F7F7F"
STAGE_COLOR = "#56B4E9"
EARLIER_HEAD_COLOR = "#F0E442"
OWN_HEAD_COLOR = "#E69F00"
OUTLINE = [pe.withStroke(linewidth=3, foreground="white")]
STYLE: dict[Any, Any] = {
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

Builder = Callable[[], "Figure | None"]


def exit_colors(num_exits: int) -> list[str]:
    """One ``#rrggbb`` colour per exit, shallow (dark) to deep (light), sampled from viridis."""
    cmap = matplotlib.colormaps["viridis"]
    return [to_hex(cmap(s)) for s in np.linspace(0.05, 0.85, max(num_exits, 1))][:num_exits]


def policy_style(i: int) -> tuple[str, str]:
    """``(colour, marker)`` of the ``i``-th policy (or run)."""
    return POLICY_COLORS[i % len(POLICY_COLORS)], POLICY_MARKERS[i % len(POLICY_MARKERS)]


def grid_shape(count: int, most: int) -> tuple[int, int]:
    """``(rows, columns)`` for ``count`` panels, at most ``most`` a row, rows balanced: 5 panels
    with ``most=4`` make 3 + 2, not 4 + 1."""
    nrows = max(1, math.ceil(count / most))
    return nrows, max(1, math.ceil(count / nrows))


def subplots(
    nrows: int, ncols: int, figsize: tuple[float, float], w_pad: float = 3 / 72, **kw: Any
) -> tuple[Figure, Any]:
    """A constrained-layout figure and its axes as a 2-D array (``squeeze=False``)."""
    fig = Figure(figsize=figsize, layout=ConstrainedLayoutEngine(w_pad=w_pad))
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` at :data:`DPI` on white."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def render_figures(builders: Mapping[str, Builder]) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` in order, skipping builders that return ``None``."""
    out = {}
    with matplotlib.rc_context(STYLE):
        for name, build in builders.items():
            fig = build()
            if fig is not None:
                out[name] = figure_png(fig)
    return out


def accuracy_limits(lowest: float) -> tuple[float, float]:
    """An accuracy axis (%) down to ``lowest``: from 0 below 40%, else from a round ten at least
    5 points under it; up to 101 (a curve at 100% stays visible)."""
    return (0.0 if lowest < 40.0 else 10.0 * math.floor((lowest - 5.0) / 10.0)), 101.0


def key(label: str, **style: Any) -> Line2D:
    """A legend entry drawn with ``style`` (a line, a marker or both)."""
    return Line2D([], [], label=label, **style)


def note(ax: Axes, text: str, xy: tuple[Any, Any], offset: tuple[float, float], **kw: Any) -> None:
    """``text`` ``offset`` points away from the data point ``xy``, outlined in white."""
    style = {"textcoords": "offset points", "fontsize": 9, "path_effects": OUTLINE, **kw}
    ax.annotate(text, xy, xytext=offset, **style)


def legend_below(fig: Figure, handles: Sequence[Any], ncol: int) -> None:
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False)


def shares_legend(fig: Figure, exit_labels: Sequence[str], ncol: int) -> None:
    """The legend of :func:`draw_shares` panels: one patch per exit and the mean-FLOPs line."""
    colors = exit_colors(len(exit_labels))
    handles: list[Any] = [Patch(color=c, label=s) for c, s in zip(colors, exit_labels, strict=True)]
    handles.append(
        key("mean FLOPs (% of plain backbone)", color="black", lw=2, ls="--", marker=".")
    )
    legend_below(fig, handles, min(len(handles), ncol))


def _positions(values: Sequence[float]) -> tuple[np.ndarray, bool]:
    """x positions: the values themselves when evenly enough spread, else their rank."""
    if len(values) >= 2 and all(math.isfinite(v) for v in values):
        gaps = np.diff(np.asarray(values, dtype=float))
        if gaps.min() > 0 and gaps.max() / gaps.min() <= 4.0:
            return np.asarray(values, dtype=float), True
    return np.arange(len(values), dtype=float), False


def _thinned(count: int, most: int) -> list[int]:
    """At most about ``most`` evenly spread indices of ``range(count)``, both ends included."""
    if count <= most:
        return list(range(count))
    return sorted({round(k * (count - 1) / (most - 1)) for k in range(most)})


def step_axis(
    ax: Axes, values: Sequence[float], labels: Sequence[str], xlabel: str, most: int = 10
) -> np.ndarray:
    """Place ``values`` on ``ax``'s x axis: by value when evenly spread, else one step each
    (ticks thinned to about ``most``, labelled with ``labels``; whole numbers get ticks at the
    values only). Returns the x positions."""
    x, by_value = _positions(values)
    whole = all(math.isfinite(v) and float(v).is_integer() for v in values)  # a patience: 1, 2, 3
    if not by_value or whole:
        ticks = _thinned(len(values), most)
        long = max((len(s) for s in labels), default=0) > 4
        ax.set_xticks(x[ticks], [labels[k] for k in ticks], rotation=45 if long else 0)
    steps = "" if by_value or len(values) < 2 else " (one step per point)"
    ax.set_xlabel(xlabel + steps)
    return x


def draw_shares(
    ax: Axes, x: np.ndarray, shares: Sequence[Sequence[float]], flops: Sequence[float]
) -> None:
    """Stacked shares of samples leaving at each exit (shallow at the bottom) and the mean FLOPs
    (% of the plain backbone, dashed) against ``x``; a lone point is drawn as a narrow band."""
    stack = 100.0 * np.asarray(shares, dtype=float).T  # (exits, points)
    cost = 100.0 * np.asarray(flops, dtype=float)
    if len(x) == 1:
        x, stack, cost = x + np.array([-0.5, 0.5]), np.repeat(stack, 2, 1), np.repeat(cost, 2)
    colors = exit_colors(stack.shape[0])
    ax.stackplot(x, stack, colors=colors, alpha=0.9, edgecolor="white", lw=0.5)
    ax.plot(x, cost, color="black", lw=2, ls="--", marker=".", path_effects=OUTLINE, clip_on=False)
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(0, max(107.0, float(cost.max()) + 5.0))
    ax.grid(False)


def pareto_steps(points: Sequence[tuple[float, float]], x_end: float) -> tuple[list, list]:
    """Step coordinates of a Pareto front ``[(x, y), ...]``, extended right to ``x_end``."""
    pts = sorted(points, key=lambda p: (p[0], -p[1]))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if xs and x_end > xs[-1]:
        xs.append(x_end)
        ys.append(ys[-1])
    return xs, ys
