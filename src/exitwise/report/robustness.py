"""The robustness report: a :class:`~exitwise.results.RobustnessResult` -> figures, CSVs, one page.

Results are grouped by their ``disturbance`` (``gaussian_noise``, ``pgd[final]``, ...) in the
order the study ran them, and sorted by level. Files written into ``out_dir``:

* ``robustness_corruptions.png`` (Fig. 5) and ``robustness_attacks.png`` (Fig. 6, every attack
  but the slowdown): accuracy of each exit, of the routed model and of the backbone alone against
  the level (top), the routed model's mean FLOPs as % of the plain backbone (bottom); each left
  out when the study has no such disturbance. ``robustness_exit_shares.png``: where the samples
  leave. ``slowdown.png`` (with a slowdown summary): FLOPs, share of the saving erased, accuracy.
* ``robustness.csv`` (one row per result), ``slowdown.csv`` (with a slowdown summary).
* ``robustness.html``: self-contained, on the same layout as ``report.html``, written last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from exitwise.report import figures as plot
from exitwise.report import format as fmt
from exitwise.report.pages import csv_bytes, embed, render_page, write_files
from exitwise.results import (
    DisturbanceResult,
    RobustnessResult,
    RoutedPoint,
    SlowdownPoint,
    SlowdownRow,
)

__all__ = [
    "DROP",
    "FIGURES",
    "ROBUSTNESS_FILE",
    "attacks_figure",
    "corruptions_figure",
    "disturbance_label",
    "exit_shares_figure",
    "groups",
    "level_axis",
    "level_text",
    "render_figures",
    "slowdown_figure",
    "tables",
    "write_robustness_report",
]

ROBUSTNESS_FILE = "robustness.html"
FIGURES = (
    "robustness_corruptions.png",
    "robustness_attacks.png",
    "robustness_exit_shares.png",
    "slowdown.png",
)
DROP = 0.05
"""Accuracy drop of the backbone (absolute) that picks the level quoted in the headline."""
ROUTED: dict[str, Any] = {"color": plot.POLICY_COLORS[0], "lw": 3, "marker": "o", "ms": 5}
CAPPED: dict[str, Any] = {"color": plot.POLICY_COLORS[1], "lw": 1.8, "ls": "-."}
BACKBONE: dict[str, Any] = {"color": plot.BACKBONE_COLOR, "lw": 1.6, "ls": "--"}

Group = tuple[str, list[DisturbanceResult]]

_LINF = ("fgsm", "bim", "pgd", "slowdown")
_NAMES = {
    "gaussian_noise": "Gaussian noise",
    "uniform_noise": "Uniform noise",
    "impulse_noise": "Impulse (salt-and-pepper) noise",
    "gaussian_blur": "Gaussian blur",
    "fgsm": "FGSM",
    "bim": "BIM",
    "pgd": "PGD",
    "deepfool": "DeepFool",
    "slowdown": "Slowdown (DeepSloth)",
}
_LEVELS = {  # name -> (axis label, the level's word)
    "gaussian_noise": ("noise std (pixels in [0, 1])", "std"),
    "uniform_noise": ("noise half-width (pixels in [0, 1])", "half-width"),
    "impulse_noise": ("fraction of pixels replaced", "fraction"),
    "gaussian_blur": ("blur sigma (pixels)", "sigma"),
    "deepfool": ("DeepFool iterations", "iterations"),
    **dict.fromkeys(_LINF, ("eps (x/255)", "eps")),
}
_TARGETS = {"final": "on the final exit", "all": "on all exits", "routed": "on the routed model"}


# ------------------------------------------------------------------------------ labels, groups


def disturbance_label(disturbance: str) -> str:
    """A readable name: ``"pgd[final]"`` -> ``"PGD on the final exit"``."""
    name, _, target = disturbance.partition("[")
    label = _NAMES.get(name, name.replace("_", " ").capitalize())
    target = target.rstrip("]")
    if not target:
        return label
    where = _TARGETS.get(target, f"on exit {target}" if target.isdigit() else f"on {target}")
    return f"{label} {where}"


def _shown(name: str, level: float) -> float:
    """The level as plotted: L-inf epsilons in units of 1/255."""
    return round(level * 255.0, 3) if name in _LINF else level


def _tick(name: str, level: float) -> str:
    return f"{_shown(name, level):g}"


def level_text(name: str, level: float) -> str:
    """``("pgd", 8/255)`` -> ``"eps 8/255"``; ``("gaussian_noise", 0.1)`` -> ``"std 0.1"``."""
    if name in _LINF:
        return f"eps {_tick(name, level)}/255"
    if name == "deepfool":
        return f"{int(level)} iteration" + ("" if int(level) == 1 else "s")
    return f"{_LEVELS.get(name, ('', 'level'))[1]} {level:g}"


def _level_word(name: str) -> str:
    """What a table's level column counts: ``eps (x/255)``, ``std``, ``iterations``."""
    return "eps (x/255)" if name in _LINF else _LEVELS.get(name, ("", "level"))[1]


def groups(study: RobustnessResult) -> list[Group]:
    """``(disturbance, rows sorted by level)`` in the order the study ran them."""
    out: dict[str, list[DisturbanceResult]] = {}
    for row in study.results.values():
        out.setdefault(row.disturbance, []).append(row)
    return [(key, sorted(rows, key=lambda r: r.level)) for key, rows in out.items()]


def _kind(g: Group) -> str:
    """``corruption``, ``attack`` or ``slowdown`` (drawn apart from the attacks)."""
    return "slowdown" if g[1][0].name == "slowdown" else g[1][0].kind


def _num_exits(study: RobustnessResult) -> int:
    return len(next(iter(study.results.values())).exit_accuracy)


def _exit_labels(n: int) -> list[str]:
    return [f"exit {i}" + (" (final)" if i == n - 1 else "") for i in range(n)]


def _cap_label(study: RobustnessResult) -> str:
    cap = study.config.cap_exit
    return f"capped at exit {cap}" if cap is not None else "capped policy"


def _capped(rows: Sequence[DisturbanceResult | SlowdownRow]) -> bool:
    return any(r.capped is not None for r in rows)


def _modes(capped: bool) -> list[str]:
    """The points a table shows: the routed policy's, and the capped one's when it was run."""
    return ["routed", "capped"] if capped else ["routed"]


def _slowdown(study: RobustnessResult) -> list[SlowdownRow]:
    """The slowdown summary by epsilon."""
    return sorted(study.slowdown, key=lambda e: e.eps)


# ------------------------------------------------------------------------------------- figures


def level_axis(ax: Axes, name: str, kind: str, levels: Sequence[float]) -> Any:
    """Put ``levels`` of disturbance ``name`` on ``ax``'s x axis, labelled in its unit (L-inf
    epsilons in 1/255); returns the x positions (see :func:`~exitwise.report.figures.step_axis`)."""
    label = _LEVELS.get(name, ("attack strength" if kind == "attack" else "level", ""))[0]
    shown = [_shown(name, v) for v in levels]
    return plot.step_axis(ax, shown, [_tick(name, v) for v in levels], label, most=8)


def _group_axis(ax: Axes, g: Group) -> Any:
    return level_axis(ax, g[1][0].name, g[1][0].kind, [r.level for r in g[1]])


def _series(points: Sequence[RoutedPoint | SlowdownPoint | None], attr: str) -> list[float]:
    return [math.nan if p is None else 100.0 * getattr(p, attr) for p in points]


def _draw_response(ax_acc: Axes, ax_flops: Axes, g: Group, n: int) -> tuple[float, float]:
    """One column of Figs. 5 / 6; returns the lowest accuracy and the highest FLOPs drawn."""
    rows = g[1]
    x = _group_axis(ax_flops, g)
    for i, color in enumerate(plot.exit_colors(n)):
        acc = [100.0 * r.exit_accuracy[i] for r in rows]
        ax_acc.plot(x, acc, color=color, lw=1.3, marker="o", ms=3.5, alpha=0.95, zorder=2)
    accuracy = _series([r.routed for r in rows], "accuracy")
    backbone = [100.0 * r.backbone_accuracy for r in rows]
    ax_acc.plot(x, accuracy, **ROUTED, path_effects=plot.OUTLINE, zorder=5)
    ax_acc.plot(x, backbone, **BACKBONE, zorder=6)
    flops = _series([r.routed for r in rows], "flops_fraction")
    ax_flops.axhline(100.0, **BACKBONE, zorder=1)
    ax_flops.plot(x, flops, **ROUTED, path_effects=plot.OUTLINE, zorder=5)
    if _capped(rows):
        ax_acc.plot(x, _series([r.capped for r in rows], "accuracy"), **CAPPED, zorder=4)
        flops += _series([r.capped for r in rows], "flops_fraction")
        ax_flops.plot(x, flops[len(rows) :], **CAPPED, marker="s", ms=3.5, zorder=4)
    for k in sorted({0, len(rows) - 1}):
        ha = "left" if k == 0 and len(rows) > 1 else "right"
        text = fmt.pct(rows[k].routed.flops_fraction, 0)
        plot.note(
            ax_flops,
            text,
            (x[k], flops[k]),
            (0, 7),
            va="bottom",
            ha=ha,
            color=ROUTED["color"],
            zorder=7,
        )
    ax_acc.set_title(disturbance_label(g[0]))
    ax_acc.tick_params(labelbottom=False)
    drawn = [100.0 * a for r in rows for a in r.exit_accuracy] + backbone + accuracy
    return min(drawn), max(v for v in flops if math.isfinite(v))


def _response_figure(study: RobustnessResult, kind: str, title: str) -> Figure | None:
    """Figs. 5 / 6: accuracy (top) and routed FLOPs (bottom) against the level, per column."""
    shown = [g for g in groups(study) if _kind(g) == kind]
    if not shown:
        return None
    n, cols = _num_exits(study), len(shown)
    fig, axes = plot.subplots(
        2, cols, (max(7.5, 4.2 * cols), 7.6), height_ratios=[1.7, 1], sharex="col"
    )
    drawn = [_draw_response(axes[0, c], axes[1, c], g, n) for c, g in enumerate(shown)]
    for c in range(cols):
        axes[0, c].set_ylim(*plot.accuracy_limits(min(d[0] for d in drawn)))
        axes[1, c].set_ylim(0, max(110.0, max(d[1] for d in drawn) + 12.0))
    axes[0, 0].set_ylabel("accuracy (%)")
    axes[1, 0].set_ylabel("mean FLOPs\n(% of plain backbone)")
    keys = [
        plot.key(s, color=c, lw=1.3, marker="o", ms=3.5)
        for c, s in zip(plot.exit_colors(n), _exit_labels(n), strict=True)
    ]
    keys.append(plot.key("routed early-exit model", **ROUTED))
    if any(_capped(rows) for _, rows in shown):
        keys.append(plot.key(_cap_label(study), **CAPPED))
    keys.append(plot.key("backbone alone (final exit, full cost)", **BACKBONE))
    plot.legend_below(fig, keys, min(len(keys), {1: 3, 2: 4}.get(cols, 7)))
    fig.suptitle(title, fontsize=13)
    return fig


def corruptions_figure(study: RobustnessResult) -> Figure | None:
    """Fig. 5: accuracy and FLOPs against the corruption level; ``None`` without corruptions."""
    return _response_figure(study, "corruption", "Common corruptions")


def attacks_figure(study: RobustnessResult) -> Figure | None:
    """Fig. 6: accuracy and FLOPs against the attack strength (the slowdown drawn apart)."""
    return _response_figure(study, "attack", "Adversarial attacks")


def exit_shares_figure(study: RobustnessResult) -> Figure:
    """Where the routed model's samples leave under each disturbance, against the level."""
    shown, n = groups(study), _num_exits(study)
    nrows, ncols = plot.grid_shape(len(shown), 4)
    fig, axes = plot.subplots(nrows, ncols, (max(7.5, 3.9 * ncols), 3.2 * nrows + 0.9), w_pad=0.12)
    for ax, g in zip(axes.flat, shown, strict=False):
        x = _group_axis(ax, g)
        routed = [r.routed for r in g[1]]
        plot.draw_shares(ax, x, [p.exit_shares for p in routed], [p.flops_fraction for p in routed])
        ax.set_title(disturbance_label(g[0]), fontsize=11)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    for r in range(nrows):
        axes[r, 0].set_ylabel("samples (%)")
    plot.shares_legend(fig, [f"leave at {s}" for s in _exit_labels(n)], 5)
    fig.suptitle("Where the samples leave (routed policy)", fontsize=13)
    return fig


def slowdown_figure(study: RobustnessResult) -> Figure | None:
    """The slowdown attack: FLOPs, share of the saving erased and accuracy against eps."""
    rows = _slowdown(study)
    if not rows:
        return None
    capped = _capped(rows)
    fig, axes = plot.subplots(1, 3, (13.5, 4.4))
    panels = (
        ("flops_fraction", "mean FLOPs (% of plain backbone)", "FLOPs spent"),
        ("saving_erased", "FLOPs saving erased (%)", "Share of the clean saving erased"),
        ("accuracy", "accuracy (%)", "Accuracy"),
    )
    eps = [e.eps for e in rows]
    for ax, (attr, ylabel, title) in zip(axes[0], panels, strict=True):
        x = level_axis(ax, "slowdown", "attack", eps)
        values = _series([e.routed for e in rows], attr)
        ax.plot(x, values, **ROUTED, label="routed policy")
        if capped:
            values += _series([e.capped for e in rows], attr)
            ax.plot(x, values[len(rows) :], **CAPPED, marker="s", ms=4.5, label=_cap_label(study))
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        if attr == "flops_fraction":
            ax.axhline(100.0, **BACKBONE, label="plain backbone (100%)")
            ax.set_ylim(0, max(110.0, max(finite) + 10.0))
        elif attr == "saving_erased":
            ax.axhline(100.0, color="#999999", ls=":", lw=1.2)
            ax.axhline(0.0, color="#999999", lw=0.8)
            ax.set_ylim(min(-5.0, min(finite) - 5.0), max(110.0, max(finite) + 10.0))
        else:
            ax.set_ylim(*plot.accuracy_limits(min(finite)))
        ax.set(ylabel=ylabel, title=title)
    handles, _ = axes[0, 0].get_legend_handles_labels()
    plot.legend_below(fig, handles, len(handles))
    fig.suptitle("Slowdown attack on all exits (DeepSloth)", fontsize=13)
    return fig


def render_figures(study: RobustnessResult) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` in display order, for the figures the study supports."""
    shown = (corruptions_figure, attacks_figure, exit_shares_figure, slowdown_figure)
    return plot.render_figures({n: partial(b, study) for n, b in zip(FIGURES, shown, strict=True)})


# -------------------------------------------------------------------------------------- tables


def _cells(point: Any, attrs: Sequence[str]) -> list[Any]:
    return [""] * len(attrs) if point is None else [getattr(point, a) for a in attrs]


def tables(study: RobustnessResult) -> dict[str, bytes]:
    """``robustness.csv`` (one row per result), and ``slowdown.csv`` with a slowdown summary."""
    n, shown = _num_exits(study), groups(study)
    attrs = ["accuracy", "mean_flops", "flops_fraction"]
    modes = _modes(any(_capped(rows) for _, rows in shown))
    header = ["disturbance", "name", "kind", "level", "level_shown", "level_unit"]
    header += [f"accuracy_exit_{i}" for i in range(n)] + ["backbone_accuracy", "backbone_flops"]
    header += [f"{m}_{a}" for m in modes for a in [*attrs, *(f"share_exit_{i}" for i in range(n))]]
    rows = []
    for r in (r for _, group in shown for r in group):
        unit = "1/255" if r.name in _LINF else _level_word(r.name)
        cells = [r.disturbance, r.name, r.kind, r.level, _shown(r.name, r.level), unit]
        cells += [*r.exit_accuracy, r.backbone_accuracy, r.backbone_flops]
        for m in modes:
            point = getattr(r, m)
            cells += _cells(point, attrs) + (list(point.exit_shares) if point else [""] * n)
        rows.append(cells)
    out = {"robustness.csv": csv_bytes(header, rows)}
    slow = _slowdown(study)
    if slow:
        attrs = ["accuracy", "flops_fraction", "saving", "saving_erased"]
        modes = _modes(_capped(slow))
        header = ["eps", "eps_255", *(f"{m}_{a}" for m in modes for a in attrs)]
        rows = [[e.eps, _shown("slowdown", e.eps)] for e in slow]
        for row, e in zip(rows, slow, strict=True):
            row += [c for m in modes for c in _cells(getattr(e, m), attrs)]
        out["slowdown.csv"] = csv_bytes(header, rows)
    return out


# ---------------------------------------------------------------------------------------- page


def _sentence(key: str, rows: list[DisturbanceResult]) -> dict[str, Any]:
    """What the headline says of one disturbance: the mildest level that costs the backbone
    :data:`DROP`, else the strongest; the strongest; the level of the peak FLOPs if higher."""
    clean = rows[0].backbone_accuracy
    quoted = next((r for r in rows[1:] if r.backbone_accuracy <= clean - DROP), rows[-1])
    top = max(rows, key=lambda r: r.routed.flops_fraction)
    shown = max(quoted.routed.flops_fraction, rows[-1].routed.flops_fraction)
    return {
        "key": key,
        "clean": rows[0],
        "quoted": quoted,
        "last": rows[-1] if rows[-1] is not quoted else None,
        "peak": top if top.routed.flops_fraction > shown + 0.02 else None,
    }


def _page(study: RobustnessResult, figures: dict[str, bytes]) -> bytes:
    shown, n = groups(study), _num_exits(study)
    clean = next((r for r in study.results.values() if r.level == 0), None)
    disturbed = [r for r in study.results.values() if r.name != "slowdown" and r.level != 0]
    top = max(disturbed, key=lambda r: r.routed.flops_fraction, default=None)
    slow = _slowdown(study)
    return render_page(
        ROBUSTNESS_FILE,
        title=study.title or "Robustness study",
        study=study,
        num_exits=n,
        exit_heads=[f"Exit {i}" for i in range(n)],
        clean=clean,
        peak=top,
        sentences=[_sentence(key, rows) for key, rows in shown if rows[0].name != "slowdown"],
        slowdown=slow,
        slowdown_modes=_modes(_capped(slow)),
        drop=DROP,
        figures=embed(figures),
        groups=shown,
        has_capped=_capped,
        eps=partial(level_text, "slowdown"),
        label=disturbance_label,
        level=lambda r: level_text(r.name, r.level),
        tick=lambda r: _tick(r.name, r.level),
        level_word=_level_word,
        colors=plot.exit_colors(n),
        notes=[],
    )


def write_robustness_report(study: RobustnessResult, out_dir: str | Path) -> Path:
    """Write the figures, ``robustness.csv`` (and ``slowdown.csv``) and ``robustness.html``;
    returns the page's path. All is rendered before the first write: a failure writes nothing."""
    figures = render_figures(study)
    page = _page(study, figures)
    return write_files(out_dir, {**tables(study), **figures, ROBUSTNESS_FILE: page})[-1]
