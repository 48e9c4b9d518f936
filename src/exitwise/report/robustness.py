"""Robustness report: a robustness study (seed 000, Figs. 5 and 6) -> PNG figures, CSVs, one page.

Example:
    >>> from exitwise.experiments.robustness import robustness_study
    >>> from exitwise.report import write_robustness_report
    >>> study = robustness_study(model, images, labels, policy, disturbances)  # doctest: +SKIP
    >>> write_robustness_report(study, "runs/resnet18")  # doctest: +SKIP
    PosixPath('runs/resnet18/robustness.html')

The input is what :func:`exitwise.experiments.robustness.robustness_study` returns (``config``,
``results``, ``slowdown``), optionally with ``title``, ``dataset``, ``command`` and ``notes``.
Results are grouped by their ``disturbance`` (``gaussian_noise``, ``pgd[final]``, ...) and sorted
by level.

Files written into ``out_dir``:

* ``robustness_corruptions.png`` (Fig. 5) and ``robustness_attacks.png`` (Fig. 6, every attack
  but the slowdown): one column per disturbance; accuracy of each exit, of the routed early-exit
  model and of the backbone alone against the level (top), the routed model's mean FLOPs as % of
  the plain backbone (bottom). Each is left out when the study has no such disturbance.
* ``robustness_exit_shares.png``: where the samples leave, per disturbance and level.
* ``slowdown.png`` (when ``study["slowdown"]`` is not empty): FLOPs, share of the FLOPs saving
  erased and accuracy against the slowdown epsilon, routed and capped.
* ``robustness.csv`` (one row per result) and ``slowdown.csv`` (with the slowdown summary).
* ``robustness.html``: self-contained, in the style of ``report.html``.

Everything is rendered in memory first; each file is then moved into place atomically and the page
last, so a failure never leaves a ``robustness.html`` (nor a half-written file) behind.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

# The package's own helpers. ``exitwise.report`` may still be initialising when this module is
# imported (its ``__init__`` imports us), so its functions are looked up at call time.
from exitwise import report as _base
from exitwise.report import html, plots
from exitwise.report.html import _e, format_pct

__all__ = [
    "CSV_FILE",
    "FIGURE_FILES",
    "ROBUSTNESS_FILE",
    "SLOWDOWN_CSV_FILE",
    "attacks_figure",
    "corruptions_figure",
    "disturbance_label",
    "exit_shares_figure",
    "render_robustness_figures",
    "render_robustness_html",
    "slowdown_figure",
    "validate_study",
    "write_robustness_report",
]

ROBUSTNESS_FILE = "robustness.html"
CSV_FILE = "robustness.csv"
SLOWDOWN_CSV_FILE = "slowdown.csv"
FIGURE_FILES = (
    "robustness_corruptions.png",
    "robustness_attacks.png",
    "robustness_exit_shares.png",
    "slowdown.png",
)

ROUTED_COLOR = plots.POLICY_COLORS[0]
CAPPED_COLOR = plots.POLICY_COLORS[1]
DROP = 0.05
"""Accuracy drop of the backbone (absolute) that picks the level quoted in the headline."""

_LINF_ATTACKS = ("fgsm", "bim", "pgd", "slowdown")
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
_LEVEL_WORDS = {  # (axis label, word in a sentence)
    "gaussian_noise": ("noise std (pixels in [0, 1])", "std"),
    "uniform_noise": ("noise half-width (pixels in [0, 1])", "half-width"),
    "impulse_noise": ("fraction of pixels replaced", "fraction"),
    "gaussian_blur": ("blur sigma (pixels)", "sigma"),
    "deepfool": ("DeepFool iterations", "iterations"),
}
_RESULT_KEYS = ("disturbance", "kind", "level", "backbone_accuracy")
_POINT_KEYS = ("accuracy", "flops_fraction", "exit_shares")
_SLOWDOWN_KEYS = ("accuracy", "flops_fraction", "saving", "saving_erased")
_MODES = ("routed", "capped")

Row = Mapping[str, Any]
Group = tuple[str, list[Row]]


# ---------------------------------------------------------------------------------- validation


def _restated(err: ValueError) -> ValueError:
    """The package validator's message, with the path rooted at ``study`` instead."""
    msg = str(err)
    return ValueError(
        "study" + msg.removeprefix("evaluation") if msg.startswith("evaluation") else msg
    )


def _get(study: Mapping[str, Any], path: Sequence[str | int]) -> Any:
    try:
        return _base._lookup(study, path)
    except ValueError as err:
        raise _restated(err) from None


def _get_list(study: Mapping[str, Any], path: Sequence[str | int], length: int | None) -> list:
    try:
        return _base._require_list(study, path, length)
    except ValueError as err:
        raise _restated(err) from None


def _check_result(study: Mapping[str, Any], key: str, num_exits: int) -> None:
    base: list[str | int] = ["results", key]
    if not isinstance(_get(study, base), Mapping):
        raise ValueError(f"study['results'][{key!r}] must be a dict")
    for name in _RESULT_KEYS:
        _get(study, [*base, name])
    kind = study["results"][key]["kind"]
    if kind not in ("corruption", "attack"):
        raise ValueError(
            f"study['results'][{key!r}]['kind'] must be 'corruption' or 'attack', got {kind!r}"
        )
    _get_list(study, [*base, "exit_accuracy"], num_exits)
    for mode in _MODES:
        if mode == "capped" and not study["results"][key].get("capped"):
            continue
        for name in _POINT_KEYS:
            _get(study, [*base, mode, name])
        _get_list(study, [*base, mode, "exit_shares"], num_exits)


def validate_study(study: Mapping[str, Any]) -> None:
    """Check that ``study`` holds everything the robustness report needs.

    Required: ``config.policy``, ``config.num_samples``; ``results``, a non-empty dict whose
    entries have ``disturbance``, ``kind`` (``corruption`` or ``attack``), ``level``,
    ``exit_accuracy`` (one per exit), ``backbone_accuracy`` and ``routed`` (``accuracy``,
    ``flops_fraction``, ``exit_shares``), plus the same for ``capped`` where present; every
    ``slowdown`` entry needs ``eps`` and ``routed`` (``accuracy``, ``flops_fraction``, ``saving``,
    ``saving_erased``), and the same for ``capped`` where present.

    Args:
        study: the robustness study dictionary.

    Raises:
        ValueError: naming the key path that is missing or malformed, for instance
            ``study['results']['pgd[final]@0.0314']['routed']['flops_fraction'] is missing``.
    """
    if not isinstance(study, Mapping):
        raise ValueError(f"study must be a dict, got {type(study).__name__}")
    _get(study, ["config", "policy"])
    _get(study, ["config", "num_samples"])
    results = _get(study, ["results"])
    if not isinstance(results, Mapping) or not results:
        raise ValueError("study['results'] must be a non-empty dict")
    first = next(iter(results))
    num_exits = len(_get_list(study, ["results", first, "exit_accuracy"], None))
    for key in results:
        _check_result(study, key, num_exits)
    slowdown = study.get("slowdown") or []
    if not isinstance(slowdown, list | tuple):
        raise ValueError("study['slowdown'] must be a list")
    for i, entry in enumerate(slowdown):
        _get(study, ["slowdown", i, "eps"])
        for mode in _MODES:
            if mode == "capped" and not entry.get("capped"):
                continue
            for name in _SLOWDOWN_KEYS:
                _get(study, ["slowdown", i, mode, name])


# ----------------------------------------------------------------------------------- grouping


def _name(row: Row) -> str:
    return str(row.get("name") or str(row["disturbance"]).split("[", 1)[0])


def _groups(study: Mapping[str, Any]) -> list[Group]:
    """``(disturbance, rows sorted by level)``, in the order the study ran them."""
    out: dict[str, list[Row]] = {}
    for row in study["results"].values():
        out.setdefault(str(row["disturbance"]), []).append(row)
    return [(key, sorted(rows, key=lambda r: float(r["level"]))) for key, rows in out.items()]


def _corruptions(groups: Sequence[Group]) -> list[Group]:
    return [g for g in groups if g[1][0]["kind"] == "corruption"]


def _attacks(groups: Sequence[Group]) -> list[Group]:
    return [g for g in groups if g[1][0]["kind"] == "attack" and _name(g[1][0]) != "slowdown"]


def _num_exits(study: Mapping[str, Any]) -> int:
    return len(next(iter(study["results"].values()))["exit_accuracy"])


def _has_capped(rows: Sequence[Row]) -> bool:
    return any(r.get("capped") for r in rows)


# -------------------------------------------------------------------------------------- labels


def disturbance_label(disturbance: str) -> str:
    """A readable name: ``"pgd[final]"`` -> ``"PGD on the final exit"``.

    Args:
        disturbance: a result's ``disturbance`` key (``name`` or ``name[target]``).

    Returns:
        The label, e.g. ``"Gaussian noise"`` for ``"gaussian_noise"``.
    """
    name, _, target = disturbance.partition("[")
    label = _NAMES.get(name, name.replace("_", " ").capitalize())
    target = target.rstrip("]")
    if not target:
        return label
    where = {
        "final": "on the final exit",
        "all": "on all exits",
        "routed": "on the routed model",
    }.get(target, f"on exit {target}" if target.isdigit() else f"on {target}")
    return f"{label} {where}"


def _is_linf(name: str) -> bool:
    return name in _LINF_ATTACKS


def _shown_level(name: str, level: float) -> float:
    """The level as plotted: L-inf epsilons in units of 1/255."""
    return round(float(level) * 255.0, 3) if _is_linf(name) else float(level)


def _level_text(name: str, level: float) -> str:
    """``pgd, 8/255`` -> ``"eps 8/255"``; ``gaussian_noise, 0.1`` -> ``"std 0.1"``."""
    if _is_linf(name):
        return f"eps {_tick_text(name, level)}/255"
    if name == "deepfool":
        n = int(level)
        return f"{n} iteration" + ("" if n == 1 else "s")
    word = _LEVEL_WORDS.get(name, ("level", "level"))[1]
    return f"{word} {float(level):g}"


def _tick_text(name: str, level: float) -> str:
    """The level in the units of its axis: ``pgd, 8/255`` -> ``"8"``."""
    return f"{_shown_level(name, level):g}"


def _level_unit(name: str) -> str:
    """What ``level_shown`` counts: ``1/255`` for L-inf epsilons, else the level's name."""
    return "1/255" if _is_linf(name) else _LEVEL_WORDS.get(name, ("", "level"))[1]


def _axis_label(name: str, kind: str) -> str:
    if _is_linf(name):
        return "eps (x/255)"
    if name in _LEVEL_WORDS:
        return _LEVEL_WORDS[name][0]
    return "attack strength" if kind == "attack" else "corruption level"


def _short_level_label(name: str) -> str:
    """The level's name for a table header: ``eps (x/255)``, ``std``, ``iterations``."""
    if _is_linf(name):
        return "eps (x/255)"
    if name in _LEVEL_WORDS:
        return _LEVEL_WORDS[name][1]
    return "level"


def _exit_labels(num_exits: int) -> list[str]:
    return [f"exit {i}" + (" (final)" if i == num_exits - 1 else "") for i in range(num_exits)]


# ------------------------------------------------------------------------------------- figures


def _positions(name: str, levels: Sequence[float]) -> tuple[np.ndarray, bool]:
    """x positions of the levels: their (shown) values when evenly spread, else their rank."""
    return plots._threshold_positions([_shown_level(name, v) for v in levels])


def _set_level_axis(ax: Axes, name: str, kind: str, levels: Sequence[float]) -> np.ndarray:
    x, by_value = _positions(name, levels)
    if not by_value:
        labels = [_tick_text(name, v) for v in levels]
        ticks = plots._thinned(len(levels), 8 if max(map(len, labels)) <= 2 else 6)
        ax.set_xticks(x[ticks], [labels[k] for k in ticks])
    suffix = "" if by_value or len(levels) < 2 else ", one step per level"
    ax.set_xlabel(_axis_label(name, kind) + suffix)
    if len(x) > 1:
        ax.set_xlim(x.min() - 0.03 * (x.max() - x.min()), x.max() + 0.03 * (x.max() - x.min()))
    return x


def _draw_accuracy(ax: Axes, rows: Sequence[Row], x: np.ndarray, num_exits: int) -> float:
    """Accuracy (%) per exit, routed, capped and backbone; returns the lowest value drawn."""
    colors = plots.exit_colors(num_exits)
    lowest = 100.0
    for i, color in enumerate(colors):
        acc = [100.0 * r["exit_accuracy"][i] for r in rows]
        ax.plot(x, acc, color=color, lw=1.3, marker="o", ms=3.5, alpha=0.95, zorder=2)
        lowest = min(lowest, *acc)
    routed = [100.0 * r["routed"]["accuracy"] for r in rows]
    ax.plot(
        x,
        routed,
        color=ROUTED_COLOR,
        lw=3,
        marker="o",
        ms=5,
        zorder=5,
        path_effects=plots._OUTLINE,
    )
    if _has_capped(rows):
        capped = [100.0 * r["capped"]["accuracy"] if r.get("capped") else math.nan for r in rows]
        ax.plot(x, capped, color=CAPPED_COLOR, lw=1.8, ls="-.", zorder=4)
    backbone = [100.0 * r["backbone_accuracy"] for r in rows]
    ax.plot(x, backbone, color=plots.BACKBONE_COLOR, lw=1.6, ls="--", zorder=6)
    return min(lowest, *routed, *backbone)


def _draw_flops(ax: Axes, rows: Sequence[Row], x: np.ndarray) -> float:
    """Mean FLOPs (% of the plain backbone), routed and capped; returns the largest value."""
    routed = [100.0 * r["routed"]["flops_fraction"] for r in rows]
    ax.axhline(100.0, color=plots.BACKBONE_COLOR, ls="--", lw=1.2, zorder=1)
    ax.plot(
        x, routed, color=ROUTED_COLOR, lw=3, marker="o", ms=5, zorder=5, path_effects=plots._OUTLINE
    )
    top = max(routed)
    if _has_capped(rows):
        capped = [
            100.0 * r["capped"]["flops_fraction"] if r.get("capped") else math.nan for r in rows
        ]
        ax.plot(x, capped, color=CAPPED_COLOR, lw=1.8, ls="-.", marker="s", ms=3.5, zorder=4)
        top = max(top, *(c for c in capped if not math.isnan(c)))
    ends = [0, len(rows) - 1] if len(rows) > 1 else [0]
    for k in ends:
        ax.annotate(
            plots._pct_label(rows[k]["routed"]["flops_fraction"]),
            (x[k], routed[k]),
            xytext=(0, 7),
            textcoords="offset points",
            ha="left" if k == 0 and len(rows) > 1 else "right",
            va="bottom",
            fontsize=9,
            color=ROUTED_COLOR,
            path_effects=plots._OUTLINE,
            zorder=7,
        )
    return top


def _accuracy_limits(lowest: float) -> tuple[float, float]:
    bottom = 0.0 if lowest < 40.0 else 10.0 * math.floor((lowest - 5.0) / 10.0)
    return max(0.0, bottom), 101.0


def _response_handles(study: Mapping[str, Any], num_exits: int, capped: bool) -> list[Line2D]:
    handles = [
        Line2D([], [], color=c, lw=1.3, marker="o", ms=3.5, label=lab)
        for c, lab in zip(plots.exit_colors(num_exits), _exit_labels(num_exits), strict=True)
    ]
    handles.append(
        Line2D([], [], color=ROUTED_COLOR, lw=3, marker="o", ms=5, label="routed early-exit model")
    )
    if capped:
        cap = study["config"].get("cap_exit")
        label = f"capped at exit {cap}" if cap is not None else "capped policy"
        handles.append(Line2D([], [], color=CAPPED_COLOR, lw=1.8, ls="-.", label=label))
    handles.append(
        Line2D(
            [],
            [],
            color=plots.BACKBONE_COLOR,
            lw=1.6,
            ls="--",
            label="backbone alone (final exit, full cost)",
        )
    )
    return handles


def _response_figure(study: Mapping[str, Any], groups: Sequence[Group], title: str) -> Figure:
    """Figs. 5 / 6: accuracy (top) and routed FLOPs (bottom) against the level, per column."""
    num_exits = _num_exits(study)
    n = len(groups)
    with plt.rc_context(plots._STYLE):
        fig, axes = plt.subplots(
            2,
            n,
            figsize=(max(7.5, 4.2 * n), 7.6),
            height_ratios=[1.7, 1],
            sharex="col",
            layout="constrained",
            squeeze=False,
        )
        lowest, top = 100.0, 100.0
        for col, (key, rows) in enumerate(groups):
            name, kind = _name(rows[0]), str(rows[0]["kind"])
            levels = [float(r["level"]) for r in rows]
            ax_acc, ax_flops = axes[0, col], axes[1, col]
            x = _set_level_axis(ax_flops, name, kind, levels)
            lowest = min(lowest, _draw_accuracy(ax_acc, rows, x, num_exits))
            top = max(top, _draw_flops(ax_flops, rows, x))
            ax_acc.set_title(disturbance_label(key))
            ax_acc.tick_params(labelbottom=False)
        for col in range(n):
            axes[0, col].set_ylim(*_accuracy_limits(lowest))
            axes[1, col].set_ylim(0, max(110.0, top + 12.0))
        axes[0, 0].set_ylabel("accuracy (%)")
        axes[1, 0].set_ylabel("mean FLOPs\n(% of plain backbone)")
        capped = any(_has_capped(rows) for _, rows in groups)
        handles = _response_handles(study, num_exits, capped)
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=min(len(handles), {1: 3, 2: 4}.get(n, 7)),
            frameon=False,
        )
        fig.suptitle(title, fontsize=13)
    return fig


def corruptions_figure(study: Mapping[str, Any]) -> Figure | None:
    """Fig. 5: accuracy and FLOPs against the corruption level, one column per corruption.

    Args:
        study: a validated robustness study.

    Returns:
        The open figure, or ``None`` when the study has no corruption.
    """
    groups = _corruptions(_groups(study))
    if not groups:
        return None
    return _response_figure(study, groups, "Common corruptions")


def attacks_figure(study: Mapping[str, Any]) -> Figure | None:
    """Fig. 6: accuracy and FLOPs against the attack strength (the slowdown left out).

    Args:
        study: a validated robustness study.

    Returns:
        The open figure, or ``None`` when the study has no such attack.
    """
    groups = _attacks(_groups(study))
    if not groups:
        return None
    return _response_figure(study, groups, "Adversarial attacks")


def _draw_shares(ax: Axes, key: str, rows: Sequence[Row], num_exits: int) -> None:
    name, kind = _name(rows[0]), str(rows[0]["kind"])
    levels = [float(r["level"]) for r in rows]
    x = _set_level_axis(ax, name, kind, levels)
    shares = np.array([[100.0 * s for s in r["routed"]["exit_shares"]] for r in rows]).T
    flops = np.array([100.0 * r["routed"]["flops_fraction"] for r in rows])
    if len(x) == 1:  # a lone level: a narrow band
        x, shares, flops = x + np.array([-0.5, 0.5]), np.repeat(shares, 2, 1), np.repeat(flops, 2)
        ax.set_xlim(x[0], x[1])
    else:
        ax.set_xlim(x.min(), x.max())
    ax.stackplot(
        x, shares, colors=plots.exit_colors(num_exits), alpha=0.9, edgecolor="white", lw=0.5
    )
    ax.plot(
        x,
        flops,
        color="black",
        lw=2,
        ls="--",
        marker=".",
        path_effects=plots._OUTLINE,
        clip_on=False,
        zorder=4,
    )
    ax.set_ylim(0, max(107.0, float(flops.max()) + 5.0))
    ax.set_title(disturbance_label(key), fontsize=11)
    ax.grid(False)


def exit_shares_figure(study: Mapping[str, Any]) -> Figure:
    """Where the samples leave under each disturbance: stacked exit shares against the level.

    Args:
        study: a validated robustness study.

    Returns:
        The open figure, one panel per disturbance (routed policy), mean FLOPs overlaid.
    """
    groups = _groups(study)
    num_exits = _num_exits(study)
    nrows = math.ceil(len(groups) / 4)
    ncols = math.ceil(len(groups) / nrows)  # balanced rows: 5 panels as 3 + 2, not 4 + 1
    with plt.rc_context(plots._STYLE):
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(max(7.5, 3.9 * ncols), 3.2 * nrows + 0.9),
            layout="constrained",
            squeeze=False,
        )
        for ax, (key, rows) in zip(axes.flat, groups, strict=False):
            _draw_shares(ax, key, rows, num_exits)
        fig.get_layout_engine().set(w_pad=0.12)
        for ax in list(axes.flat)[len(groups) :]:
            ax.set_visible(False)
        for r in range(nrows):
            axes[r, 0].set_ylabel("samples (%)")
        handles: list[Any] = [
            Patch(color=c, label=f"leave at {lab}")
            for c, lab in zip(plots.exit_colors(num_exits), _exit_labels(num_exits), strict=True)
        ]
        handles.append(
            Line2D(
                [], [], color="black", lw=2, ls="--", marker=".", label="mean FLOPs (% of backbone)"
            )
        )
        fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 5), frameon=False
        )
        fig.suptitle("Where the samples leave (routed policy)", fontsize=13)
    return fig


def _slowdown_series(entries: Sequence[Row], mode: str, key: str) -> list[float]:
    return [100.0 * e[mode][key] if e.get(mode) else math.nan for e in entries]


def slowdown_figure(study: Mapping[str, Any]) -> Figure | None:
    """The slowdown attack: FLOPs, share of the FLOPs saving erased and accuracy against eps.

    Args:
        study: a validated robustness study.

    Returns:
        The open figure, or ``None`` when ``study["slowdown"]`` is empty.
    """
    entries = sorted(study.get("slowdown") or [], key=lambda e: float(e["eps"]))
    if not entries:
        return None
    eps = [float(e["eps"]) for e in entries]
    capped = any(e.get("capped") for e in entries)
    cap = study["config"].get("cap_exit")
    cap_label = f"capped at exit {cap}" if cap is not None else "capped policy"
    panels = (
        ("flops_fraction", "mean FLOPs (% of plain backbone)", "FLOPs spent"),
        ("saving_erased", "FLOPs saving erased (%)", "Share of the clean saving erased"),
        ("accuracy", "accuracy (%)", "Accuracy"),
    )
    with plt.rc_context(plots._STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.4), layout="constrained")
        for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
            x = _set_level_axis(ax, "slowdown", "attack", eps)
            routed = _slowdown_series(entries, "routed", key)
            ax.plot(x, routed, color=ROUTED_COLOR, lw=3, marker="o", ms=5, label="routed policy")
            values = list(routed)
            if capped:
                capped_values = _slowdown_series(entries, "capped", key)
                values += capped_values
                ax.plot(
                    x,
                    capped_values,
                    color=CAPPED_COLOR,
                    lw=2.2,
                    ls="-.",
                    marker="s",
                    ms=4.5,
                    label=cap_label,
                )
            finite = [v for v in values if math.isfinite(v)] or [0.0]
            if key == "flops_fraction":
                ax.axhline(
                    100.0,
                    color=plots.BACKBONE_COLOR,
                    ls="--",
                    lw=1.2,
                    label="plain backbone (100%)",
                )
                ax.set_ylim(0, max(110.0, max(finite) + 10.0))
            elif key == "saving_erased":
                ax.axhline(100.0, color="#999999", ls=":", lw=1.2)
                ax.axhline(0.0, color="#999999", lw=0.8)
                ax.set_ylim(min(-5.0, min(finite) - 5.0), max(110.0, max(finite) + 10.0))
            else:
                ax.set_ylim(*_accuracy_limits(min(finite)))
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), frameon=False)
        fig.suptitle("Slowdown attack on all exits (DeepSloth)", fontsize=13)
    return fig


def _builders() -> list[tuple[str, Callable[[Mapping[str, Any]], Figure | None]]]:
    # Looked up at call time so a replaced module attribute is honoured.
    builders = (corruptions_figure, attacks_figure, exit_shares_figure, slowdown_figure)
    return list(zip(FIGURE_FILES, builders, strict=True))


def render_robustness_figures(study: Mapping[str, Any]) -> dict[str, bytes]:
    """Render every figure the study supports, ``{file name: PNG bytes}`` in display order.

    Figures opened meanwhile are closed, also when a builder raises.
    """
    before = set(plt.get_fignums())
    try:
        out: dict[str, bytes] = {}
        for name, build in _builders():
            fig = build(study)
            if fig is not None:
                out[name] = plots.figure_png(fig)
        return out
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


# -------------------------------------------------------------------------------------- tables


def _point_cells(point: Row | None, num_exits: int) -> list[Any]:
    if not point:
        return [""] * (3 + num_exits)
    return [
        point["accuracy"],
        point.get("mean_flops", ""),
        point["flops_fraction"],
        *point["exit_shares"],
    ]


def _results_table(study: Mapping[str, Any]) -> bytes:
    num_exits = _num_exits(study)
    groups = _groups(study)
    capped = any(_has_capped(rows) for _, rows in groups)
    modes = _MODES if capped else _MODES[:1]
    header = ["disturbance", "name", "kind", "level", "level_shown", "level_unit"]
    header += [f"accuracy_exit_{i}" for i in range(num_exits)]
    header += ["backbone_accuracy", "backbone_flops"]
    for mode in modes:
        header += [f"{mode}_accuracy", f"{mode}_mean_flops", f"{mode}_flops_fraction"]
        header += [f"{mode}_share_exit_{i}" for i in range(num_exits)]
    rows = []
    for key, group in groups:
        for r in group:
            name = _name(r)
            shown = _shown_level(name, r["level"])
            cells = [key, name, r["kind"], r["level"], shown, _level_unit(name)]
            cells += [*r["exit_accuracy"], r["backbone_accuracy"], r.get("backbone_flops", "")]
            for mode in modes:
                cells += _point_cells(r.get(mode), num_exits)
            rows.append(cells)
    return _base._csv_bytes(header, rows)


def _slowdown_table(entries: Sequence[Row]) -> bytes:
    capped = any(e.get("capped") for e in entries)
    modes = _MODES if capped else _MODES[:1]
    header = ["eps", "eps_255"]
    header += [f"{m}_{k}" for m in modes for k in _SLOWDOWN_KEYS]
    rows = []
    for e in entries:
        cells = [e["eps"], _shown_level("slowdown", e["eps"])]
        for mode in modes:
            point = e.get(mode)
            cells += [point[k] for k in _SLOWDOWN_KEYS] if point else [""] * len(_SLOWDOWN_KEYS)
        rows.append(cells)
    return _base._csv_bytes(header, rows)


def _tables(study: Mapping[str, Any]) -> dict[str, bytes]:
    out = {CSV_FILE: _results_table(study)}
    entries = sorted(study.get("slowdown") or [], key=lambda e: float(e["eps"]))
    if entries:
        out[SLOWDOWN_CSV_FILE] = _slowdown_table(entries)
    return out


# ------------------------------------------------------------------------------------ headline


def _pct0(fraction: float) -> str:
    return format_pct(fraction, 0)


def _quoted_row(rows: Sequence[Row]) -> Row:
    """The mildest level costing the backbone at least :data:`DROP`, else the strongest one."""
    clean = rows[0]["backbone_accuracy"]
    for r in rows[1:]:
        if r["backbone_accuracy"] <= clean - DROP:
            return r
    return rows[-1]


def _disturbance_sentence(key: str, rows: Sequence[Row]) -> str:
    name = _name(rows[0])
    first, row, last = rows[0], _quoted_row(rows), rows[-1]
    routed = row["routed"]
    text = (
        f"<b>{_e(disturbance_label(key))}</b>, {_e(_level_text(name, row['level']))}: routed "
        f"accuracy <b>{format_pct(routed['accuracy'])}</b> "
        f"(backbone {format_pct(row['backbone_accuracy'])}), FLOPs "
        f"<b>{_pct0(first['routed']['flops_fraction'])} \u2192 "
        f"{_pct0(routed['flops_fraction'])}</b> of the backbone"
    )
    if last is not row:
        text += (
            f". At {_e(_level_text(name, last['level']))}: routed "
            f"{format_pct(last['routed']['accuracy'])} (backbone "
            f"{format_pct(last['backbone_accuracy'])}), FLOPs "
            f"{_pct0(last['routed']['flops_fraction'])}"
        )
    peak = max(rows, key=lambda r: r["routed"]["flops_fraction"])
    shown = max(routed["flops_fraction"], last["routed"]["flops_fraction"])
    if peak["routed"]["flops_fraction"] > shown + 0.02:
        text += (
            f"; peak FLOPs {_pct0(peak['routed']['flops_fraction'])} at "
            f"{_e(_level_text(name, peak['level']))}"
        )
    return text + "."


def _slowdown_sentence(study: Mapping[str, Any], entries: Sequence[Row]) -> str:
    clean, last = entries[0], entries[-1]
    eps = _level_text("slowdown", last["eps"])
    if clean["routed"]["saving"] <= 0:
        return (
            f"<b>Slowdown</b>: the routed model saves no FLOPs even on clean inputs "
            f"({_pct0(clean['routed']['flops_fraction'])} of the backbone), so there is no "
            f"saving to erase; at {_e(eps)} it spends {_pct0(last['routed']['flops_fraction'])}."
        )
    text = (
        f"<b>Slowdown</b> {_e(eps)} erases <b>{_pct0(last['routed']['saving_erased'])}</b> of the "
        f"FLOPs saving (FLOPs {_pct0(clean['routed']['flops_fraction'])} \u2192 "
        f"{_pct0(last['routed']['flops_fraction'])} of the backbone, accuracy "
        f"{format_pct(last['routed']['accuracy'])})"
    )
    if last.get("capped") and clean.get("capped"):
        cap = study["config"].get("cap_exit")
        who = f"the cap at exit {_e(cap)}" if cap is not None else "the capped policy"
        text += (
            f"; {who} keeps it to <b>{_pct0(last['capped']['saving_erased'])}</b> (FLOPs "
            f"{_pct0(clean['capped']['flops_fraction'])} \u2192 "
            f"{_pct0(last['capped']['flops_fraction'])}, accuracy "
            f"{format_pct(last['capped']['accuracy'])})"
        )
    return text + "."


def _clean_row(study: Mapping[str, Any]) -> Row | None:
    return next((r for r in study["results"].values() if float(r["level"]) == 0), None)


def _headline_cards(study: Mapping[str, Any], entries: Sequence[Row]) -> list[str]:
    cards = []
    clean = _clean_row(study)
    if clean is not None:
        cards.append(
            html._card(
                "Backbone alone, clean",
                format_pct(clean["backbone_accuracy"]),
                "at 100% of the FLOPs",
            )
        )
        cards.append(
            html._card(
                "Early-exit model, clean",
                format_pct(clean["routed"]["accuracy"]),
                f"at {_pct0(clean['routed']['flops_fraction'])} of the backbone's FLOPs",
            )
        )
    rows = [
        r for r in study["results"].values() if _name(r) != "slowdown" and float(r["level"]) != 0
    ]
    if rows:
        peak = max(rows, key=lambda r: r["routed"]["flops_fraction"])
        label = disturbance_label(str(peak["disturbance"]))
        where = f"{label}, {_level_text(_name(peak), peak['level'])}"
        sub = f"of the backbone, under {_e(where)}"
        if (
            clean is not None
            and peak["routed"]["flops_fraction"] <= clean["routed"]["flops_fraction"]
        ):
            sub = "of the backbone: no disturbance raised it above the clean level"
        cards.append(
            html._card("Highest routed FLOPs", _pct0(peak["routed"]["flops_fraction"]), sub)
        )
    if entries:
        last = entries[-1]
        sub = f"by slowdown {_e(_level_text('slowdown', last['eps']))}"
        if last.get("capped"):
            sub += f"; capped: {_pct0(last['capped']['saving_erased'])}"
        if entries[0]["routed"]["saving"] > 0:
            value = _pct0(last["routed"]["saving_erased"])
            cards.append(html._card("FLOPs saving erased", value, sub))
    return cards


def _headline(study: Mapping[str, Any], groups: Sequence[Group], entries: Sequence[Row]) -> str:
    items = [
        _disturbance_sentence(key, rows) for key, rows in groups if _name(rows[0]) != "slowdown"
    ]
    if entries:
        items.append(_slowdown_sentence(study, entries))
    items.append(
        "<span class='small'>Level quoted per disturbance: the mildest one that costs the "
        f"backbone at least {100 * DROP:g} accuracy points (else the strongest); FLOPs are the "
        "routed model's mean per sample as % of the plain backbone, at the first level "
        "\u2192 the quoted one.</span>"
    )
    cards = "".join(_headline_cards(study, entries))
    lis = "".join(f"<li>{s}</li>" for s in items)
    return f'<section class="headline"><div class="cards">{cards}</div><ul>{lis}</ul></section>'


# -------------------------------------------------------------------------------------- header


def _dataset_text(dataset: Any) -> str:
    if isinstance(dataset, Mapping):
        return str(dataset.get("name", ""))
    return str(dataset)


def _header(study: Mapping[str, Any]) -> str:
    config = study["config"]
    title = study.get("title") or "Robustness study"
    lines = []
    if study.get("dataset"):
        lines.append(f"Dataset: <b>{_e(_dataset_text(study['dataset']))}</b>")
    samples = f"Samples: <b>{int(config['num_samples']):,}</b> evaluation images"
    if config.get("seed") is not None:
        samples += f", seed {_e(config['seed'])}"
    lines.append(samples)
    policy = f"Exit policy: <code>{_e(config['policy'])}</code>"
    if config.get("cap_exit") is not None:
        policy += f"; slowdown defence: capped at exit {_e(config['cap_exit'])}"
    lines.append(policy)
    lines.append(f"Exits: {_num_exits(study)} (exit 0 is the shallowest)")
    if study.get("command"):
        lines.append(f"Command: <code>{_e(study['command'])}</code>")
    meta = "".join(f'<p class="meta">{line}</p>' for line in lines)
    return f"<header><h1>{_e(title)}</h1>{meta}</header>"


# ------------------------------------------------------------------------------------- figures


def _captions(study: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    cap = study["config"].get("cap_exit")
    capped = f"the policy capped at exit {cap}" if cap is not None else "the capped policy"
    common = (
        "Top row: accuracy against the {what} for each exit alone (thin lines, shallow exits "
        "dark, deep exits light), for the early-exit model routed by its exit policy (bold blue) "
        "and for the backbone alone (dashed black: the final exit at the full cost, so it hides "
        f"the final exit's line). Dash-dotted orange: {capped}, where present. Bottom row: the "
        "mean FLOPs the routed model spends per sample, as % of the plain backbone (dashed line "
        "at 100%; the labels give the first and last level). When a disturbance makes the early "
        "exits less confident, samples run deeper and the bottom curve rises: the FLOPs saving "
        "shrinks even where accuracy holds. Uneven level grids are drawn one step per level."
    )
    return {
        "robustness_corruptions.png": (
            "Common corruptions (Fig. 5)",
            common.format(what="corruption level"),
        ),
        "robustness_attacks.png": (
            "Adversarial attacks (Fig. 6)",
            common.format(what="attack strength")
            + " L-inf attacks (FGSM, BIM, PGD) are labelled by their epsilon in units of 1/255; "
            "DeepFool by its iteration budget. The attack's target is named in each title.",
        ),
        "robustness_exit_shares.png": (
            "Where the samples leave",
            "For every disturbance, the share of samples leaving at each exit of the routed "
            "model (stacked, shallow exits at the bottom) against the level, with the resulting "
            "mean FLOPs as % of the plain backbone (dashed). A growing top band means more "
            "samples pay for the whole network.",
        ),
        "slowdown.png": (
            "Slowdown attack",
            "The slowdown attack (DeepSloth) perturbs the inputs so that no exit is confident "
            "and every sample runs deep. Left: mean FLOPs as % of the plain backbone; middle: "
            "the share of the clean FLOPs saving that the attack erases (0% = none, 100% = all "
            f"of it); right: accuracy. Blue: the routed policy; dash-dotted orange: {capped}, "
            "which bounds the worst-case cost.",
        ),
    }


def _figure(name: str, png: bytes, title: str, text: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{_e(name.removesuffix(".png"))}">'
        f'<img src="data:image/png;base64,{data}" alt="{_e(title)}">'
        f"<figcaption><b>{_e(title)}.</b> {_e(text)} <span class='small'>"
        f"(<code>{_e(name)}</code>)</span></figcaption></figure>"
    )


def _figures(study: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    captions = _captions(study)
    parts = [_figure(n, png, *captions.get(n, (n, ""))) for n, png in figures.items()]
    return "<h2>Figures</h2>" + "".join(parts)


# -------------------------------------------------------------------------------------- tables


def _group_rows(rows: Sequence[Row], num_exits: int, capped: bool) -> list[str]:
    out = []
    for r in rows:
        name = _name(r)
        routed = r["routed"]
        cells = [_e(_tick_text(name, r["level"]))]
        cells += [format_pct(a) for a in r["exit_accuracy"]]
        cells += [
            format_pct(r["backbone_accuracy"]),
            format_pct(routed["accuracy"]),
            html._points_delta(routed["accuracy"], r["backbone_accuracy"]),
            _pct0(routed["flops_fraction"]),
        ]
        if capped:
            point = r.get("capped")
            cells += (
                [format_pct(point["accuracy"]), _pct0(point["flops_fraction"])]
                if point
                else ["", ""]
            )
        cells.append(html._share_bar(routed["exit_shares"]))
        out.append(html._row(cells, left=1, last_left=True))
    return out


def _group_section(key: str, rows: Sequence[Row], num_exits: int) -> str:
    capped = _has_capped(rows)
    head = [_e(_short_level_label(_name(rows[0])))]
    head += [f"Exit {i}" for i in range(num_exits)]
    head += ["Backbone", "Routed", "vs backbone", "FLOPs"]
    if capped:
        head += ["Capped", "FLOPs"]
    head.append("Exit shares, routed (%)")
    table = html._table(head, _group_rows(rows, num_exits, capped), last_left=True)
    return f"<h3>{_e(disturbance_label(key))}</h3>{table}"


def _slowdown_section(study: Mapping[str, Any], entries: Sequence[Row]) -> str:
    if not entries:
        return ""
    capped = any(e.get("capped") for e in entries)
    head = ["eps (x/255)", "Routed accuracy", "Routed FLOPs", "Saving", "Saving erased"]
    if capped:
        head += ["Capped accuracy", "Capped FLOPs", "Saving", "Saving erased"]
    rows = []
    for e in entries:
        cells = [_e(_tick_text("slowdown", e["eps"]))]
        for mode in _MODES[: 2 if capped else 1]:
            p = e.get(mode)
            cells += (
                [
                    format_pct(p["accuracy"]),
                    _pct0(p["flops_fraction"]),
                    _pct0(p["saving"]),
                    _pct0(p["saving_erased"]),
                ]
                if p
                else [""] * 4
            )
        rows.append(html._row(cells))
    return (
        "<h2>Slowdown attack</h2><p>FLOPs as % of the plain backbone; the saving is 100% minus "
        "that, and the share erased compares it with the clean saving. "
        f"<code>{_e(SLOWDOWN_CSV_FILE)}</code> has the raw numbers.</p>" + html._table(head, rows)
    )


def _tables_section(study: Mapping[str, Any], groups: Sequence[Group]) -> str:
    num_exits = _num_exits(study)
    intro = (
        "<h2>Per-disturbance tables</h2><p>Accuracy of each exit alone, of the backbone alone "
        "and of the routed model (with its difference to the backbone), the mean FLOPs the "
        "routed model spends as % of the plain backbone, the same two numbers for the capped "
        "policy where present, and where the routed model's samples leave. "
        f"<code>{_e(CSV_FILE)}</code> has the raw numbers.</p>"
    )
    legend = html._exit_legend({"exits": [{"exit": i} for i in range(num_exits)]})
    parts = [_group_section(key, rows, num_exits) for key, rows in groups]
    return intro + "".join(parts) + legend


def render_robustness_html(study: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """The whole robustness page.

    Args:
        study: a validated robustness study.
        figures: ``{file name: PNG bytes}`` in display order, embedded as data URIs.

    Returns:
        The HTML document as a string.
    """
    groups = _groups(study)
    entries = sorted(study.get("slowdown") or [], key=lambda e: float(e["eps"]))
    body = "".join(
        [
            _header(study),
            _headline(study, groups, entries),
            _figures(study, figures),
            _tables_section(study, groups),
            _slowdown_section(study, entries),
            html._notes_section(study),
            "<footer>Generated by exitwise.report. Self-contained: figures are embedded in this "
            "file; the CSV tables lie next to it.</footer>",
        ]
    )
    title = study.get("title") or "Robustness study"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{html._CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


# -------------------------------------------------------------------------------------- writing


def write_robustness_report(study: dict, out_dir: str | Path) -> Path:
    """Write the robustness figures, the CSV tables and the self-contained ``robustness.html``.

    Everything is rendered in memory first, so a failure (a bad value, a plotting error) writes
    nothing; each file is then moved into place atomically, the page last.

    Args:
        study: what :func:`~exitwise.experiments.robustness.robustness_study` returns, optionally
            with ``title``, ``dataset``, ``command`` and ``notes``.
        out_dir: folder to write into (created if needed).

    Returns:
        The path of ``robustness.html``.

    Raises:
        ValueError: if a required key is missing (the message names its path).
    """
    validate_study(study)
    figures = render_robustness_figures(study)
    tables = _tables(study)
    page = render_robustness_html(study, figures).encode("utf-8")
    out = Path(out_dir)
    _base._write_all({**tables, **figures}, out)
    _base._atomic_write(out / ROBUSTNESS_FILE, page)
    return out / ROBUSTNESS_FILE
