"""The risk-control report: a :class:`~exitwise.results.RiskResult` -> figures, CSVs, one page.

Exit thresholds chosen so that the early-exit model's risk against its final exit stays below a
level epsilon: Conformal Risk Control (CRC; Angelopoulos et al. 2022) bounds the expected risk,
Learn then Test (LTT; Angelopoulos et al. 2021) bounds the chance (delta) that the risk exceeds
epsilon; both as in "Fast yet Safe" (Jazbec et al. 2024), with a shared or a per-exit threshold.
Files written into ``out_dir``:

* ``risk_disagreement.png``, ``risk_gap.png`` (one per risk in the evidence): a column per
  threshold rule; the realised test risk against epsilon (the target line, CRC's mean with its
  p10-p90 spread over the random splits, LTT's mean), LTT's violation rate against delta, and the
  mean FLOPs of CRC, LTT and the best unconstrained threshold. ``risk_shift.png`` (with shift
  rows): risk and FLOPs against the disturbance level, calibrated on clean images or recalibrated.
* ``risk_fitted.csv``, ``risk_recalibrated.csv``, ``risk_evidence.csv``, ``risk_shift.csv``.
* ``risk.html``: self-contained, on the same layout as ``report.html``, written last.

The cells of the tables come from :func:`fit_cells`, :func:`evidence_cells` and
:func:`shift_table`, shared with :func:`exitwise.report.markdown.risk_markdown`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from exitwise.report import figures as plot
from exitwise.report import format as fmt
from exitwise.report.pages import csv_bytes, embed, render_page, write_files
from exitwise.report.robustness import disturbance_label, level_axis, level_text
from exitwise.results import (
    EvidenceRow,
    RiskConfig,
    RiskEvidence,
    RiskFitResult,
    RiskResult,
    ShiftRow,
)

__all__ = [
    "EVIDENCE_HEADER",
    "METHODS",
    "RISKS",
    "RISK_FILE",
    "RULES",
    "evidence_cells",
    "evidence_figure",
    "evidence_title",
    "fit_cells",
    "fit_header",
    "fits_source",
    "render_figures",
    "shift_figure",
    "shift_table",
    "tables",
    "write_risk_report",
]

RISK_FILE = "risk.html"
RISKS = {
    "disagreement": "disagreement with the final exit",
    "gap": "accuracy gap to the final exit",
}
RULES = {"shared": "one shared threshold", "per_exit": "one threshold per exit"}
METHODS = {"crc": "CRC", "ltt": "LTT"}

CRC: dict[str, Any] = {"color": plot.POLICY_COLORS[0], "lw": 2.4, "marker": "o", "ms": 5}
LTT: dict[str, Any] = {
    "color": plot.POLICY_COLORS[1],
    "lw": 2.0,
    "ls": "--",
    "marker": "s",
    "ms": 5,
}
BEST: dict[str, Any] = {"color": "#555555", "lw": 1.6, "ls": ":", "marker": "^", "ms": 5}
TARGET: dict[str, Any] = {"color": plot.BACKBONE_COLOR, "lw": 1.3, "ls": "--"}
DELTA: dict[str, Any] = {"color": plot.BACKBONE_COLOR, "lw": 1.3, "ls": "-."}
CLEAN: dict[str, Any] = {"color": plot.POLICY_COLORS[1]}  # calibrated on clean images
RECALIBRATED: dict[str, Any] = {"color": plot.POLICY_COLORS[0]}  # on the disturbed images
METHOD_LINES: dict[str, dict[str, Any]] = {
    "crc": {"ls": "-", "marker": "o", "lw": 2.2, "ms": 5},
    "ltt": {"ls": "--", "marker": "s", "lw": 1.8, "ms": 5},
}

EVIDENCE_HEADER = [
    "ε",
    "CRC mean risk",
    "CRC p10-p90",
    "CRC FLOPs",
    "LTT violation rate",
    "LTT mean risk",
    "LTT FLOPs",
    "Best FLOPs (on test)",
]


# ------------------------------------------------------------------------------ table cells


def _within(value: float | None, level: float) -> str:
    """``"yes"``, or ``"no (+1.16 pt)"`` with the excess over ``level``."""
    if value is None:
        return "-"
    return "yes" if value <= level else f"no ({fmt.points(value - level, 2)})"


def _over(text: str, value: float, level: float, name: str) -> str:
    return text if value <= level else f"{text} (> {name})"


def _side_exits(fits: Sequence[RiskFitResult]) -> int:
    """The most thresholds (side exits) of any of ``fits``."""
    return max((len(f.thresholds) for f in fits), default=0)


def fit_header(fits: Sequence[RiskFitResult]) -> list[str]:
    """The header of :func:`fit_cells`: the thresholds' column names the side exits."""
    side = _side_exits(fits)
    return [
        "Method",
        "Risk",
        "Rule",
        "ε",
        f"Thresholds, exit {' / '.join(map(str, range(side)))}",
        "Calibration risk",
        "Test risk",
        "Within ε",
        "Test FLOPs",
        "Test accuracy",
    ]


def fit_cells(f: RiskFitResult) -> list[str]:
    """One fitted rule as :func:`fit_header` names it (LTT with its delta)."""
    method = METHODS[f.method] + (f", δ = {fmt.pct_exact(f.delta)}" if f.delta is not None else "")
    thresholds = fmt.thresholds(f.thresholds)
    if not f.qualified:
        thresholds += " (none qualified)"  # every image runs to the final exit
    return [
        method,
        f.risk,
        f.rule,
        fmt.pct_exact(f.epsilon),
        thresholds,
        fmt.pct(f.calib_risk, 2),
        fmt.pct(f.test_risk, 2),
        _within(f.test_risk, f.epsilon),
        fmt.pct(f.test_flops_fraction),
        fmt.pct(f.test_accuracy, 2),
    ]


def fits_source(fits: Sequence[RiskFitResult]) -> str:
    """Where a list of fitted rules was calibrated and measured: ``"calibrated on validation
    (3,921 images), measured on test"``; several values are listed."""

    def listed(values: Sequence[str]) -> str:
        return " / ".join(dict.fromkeys(values))

    images = listed([fmt.count(f.calib_samples) for f in fits])
    calibrated, measured = (
        listed([f.calibrated_on for f in fits]),
        listed([f.measured_on for f in fits]),
    )
    return f"calibrated on {calibrated} ({images} images), measured on {measured}"


def evidence_title(ev: RiskEvidence) -> str:
    """``"disagreement risk, one shared threshold: 200 splits, 50% to calibrate, δ = 10%"``."""
    return (
        f"{ev.risk} risk, {RULES.get(ev.rule, ev.rule)}: {fmt.count(ev.splits)} splits, "
        f"{fmt.pct_exact(ev.calib_fraction)} to calibrate, δ = {fmt.pct_exact(ev.delta)}"
    )


def evidence_cells(row: EvidenceRow, delta: float) -> list[str]:
    """One epsilon of :data:`EVIDENCE_HEADER`; a mean risk above epsilon and a violation rate
    above delta say so."""
    eps = row.epsilon
    return [
        fmt.pct_exact(eps),
        _over(fmt.pct(row.crc_mean_risk, 2), row.crc_mean_risk, eps, "ε"),
        f"{fmt.pct(row.crc_risk_p10, 2)} – {fmt.pct(row.crc_risk_p90, 2)}",
        fmt.pct(row.crc_flops_fraction),
        _over(fmt.pct(row.ltt_violation_rate), row.ltt_violation_rate, delta, "δ"),
        _over(fmt.pct(row.ltt_mean_risk, 2), row.ltt_mean_risk, eps, "ε"),
        fmt.pct(row.ltt_flops_fraction),
        fmt.pct(row.best_flops_fraction),
    ]


def _name(disturbance: str) -> str:
    """The disturbance's name without its target: ``"pgd[final]"`` -> ``"pgd"``."""
    return disturbance.partition("[")[0]


def _setting(row: ShiftRow, config: RiskConfig) -> tuple[str, str, float]:
    """A shift row's risk, rule and epsilon (the study's ``user_epsilon`` when not recorded)."""
    eps = row.epsilon if row.epsilon is not None else config.user_epsilon
    return row.risk or "-", row.rule or "-", eps


def _setting_text(setting: tuple[str, str, float]) -> str:
    risk, rule, eps = setting
    return f"{risk} risk, {RULES.get(rule, 'rule ' + rule)}, ε = {fmt.pct_exact(eps)}"


def _sorted_shift(study: RiskResult) -> list[ShiftRow]:
    """Shift rows by disturbance (first seen first), setting, level and method."""
    order = {name: k for k, name in enumerate(dict.fromkeys(r.disturbance for r in study.shift))}
    return sorted(
        study.shift,
        key=lambda r: (order[r.disturbance], _setting(r, study.config), r.level, r.method),
    )


def shift_table(study: RiskResult) -> tuple[list[str], list[list[str]], str]:
    """``(header, rows, setting)``: the risk, rule and epsilon get columns only when the rows
    differ in them, else ``setting`` says them once (``""`` without shift rows)."""
    rows = _sorted_shift(study)
    settings = list(dict.fromkeys(_setting(r, study.config) for r in rows))
    common = len(settings) <= 1
    header = ["Disturbance", "Level", "Method", *([] if common else ["Risk", "Rule", "ε"])]
    header += [
        "Risk, clean-calibrated",
        "FLOPs, clean-calibrated",
        "Risk, recalibrated",
        "FLOPs, recalibrated",
        "Final-exit accuracy",
    ]
    cells = []
    for r in rows:
        risk, rule, eps = _setting(r, study.config)
        cells.append(
            [
                disturbance_label(r.disturbance),
                level_text(_name(r.disturbance), r.level),
                METHODS[r.method],
            ]
            + ([] if common else [risk, rule, fmt.pct_exact(eps)])
            + [
                _over(fmt.pct(r.clean_calibrated_risk, 2), r.clean_calibrated_risk, eps, "ε"),
                fmt.pct(r.clean_calibrated_flops_fraction),
                _over(fmt.pct(r.recalibrated_risk, 2), r.recalibrated_risk, eps, "ε"),
                fmt.pct(r.recalibrated_flops_fraction),
                fmt.pct(r.final_exit_accuracy, 2),
            ]
        )
    return header, cells, _setting_text(settings[0]) if common and settings else ""


# ------------------------------------------------------------------------------------- figures


def _percent(values: Sequence[float]) -> list[float]:
    return [100.0 * v for v in values]


def _draw_evidence(ax_risk: Axes, ax_viol: Axes, ax_flops: Axes, ev: RiskEvidence) -> None:
    """One column: realised risk, LTT's violation rate and the FLOPs against epsilon."""
    rows = sorted(ev.rows, key=lambda r: r.epsilon)
    eps = [r.epsilon for r in rows]
    x = plot.step_axis(ax_flops, eps, [fmt.pct_exact(e) for e in eps], "target risk ε")

    def series(attr: str) -> list[float]:
        return _percent([getattr(r, attr) for r in rows])

    ax_risk.plot(x, _percent(eps), **TARGET, zorder=2)
    p10, p90 = series("crc_risk_p10"), series("crc_risk_p90")
    ax_risk.fill_between(x, p10, p90, color=CRC["color"], alpha=0.18, lw=0, zorder=1)
    ax_risk.plot(x, series("crc_mean_risk"), **CRC, path_effects=plot.OUTLINE, zorder=4)
    ax_risk.plot(x, series("ltt_mean_risk"), **LTT, zorder=3)
    ax_risk.set_ylim(bottom=0)
    ax_risk.set_title(f"{ev.risk} risk, {RULES.get(ev.rule, ev.rule)}", fontsize=11.5)
    ax_viol.axhline(100.0 * ev.delta, **DELTA, zorder=2)
    ax_viol.plot(x, series("ltt_violation_rate"), **LTT, zorder=3)
    top = max([ev.delta, *(r.ltt_violation_rate for r in rows)])
    ax_viol.set_ylim(0, 100.0 * top * 1.25)  # the delta line clear of the frame
    ax_flops.axhline(100.0, color="#999999", lw=0.8)
    ax_flops.plot(x, series("best_flops_fraction"), **BEST, zorder=2)
    ax_flops.plot(x, series("ltt_flops_fraction"), **LTT, zorder=3)
    ax_flops.plot(x, series("crc_flops_fraction"), **CRC, path_effects=plot.OUTLINE, zorder=4)
    for ax in (ax_risk, ax_viol):
        ax.tick_params(labelbottom=False)


def evidence_figure(study: RiskResult, risk: str) -> Figure | None:
    """The evidence for one risk: a column per threshold rule (shared, per exit), rows: realised
    test risk, LTT's violation rate and mean FLOPs against epsilon; ``None`` without evidence."""
    shown = sorted(
        (ev for ev in study.evidence if ev.risk == risk and ev.rows),
        key=lambda ev: list(RULES).index(ev.rule) if ev.rule in RULES else len(RULES),
    )
    if not shown:
        return None
    cols = len(shown)
    fig, axes = plot.subplots(
        3, cols, (max(8.0, 6.4 * cols), 10.0), height_ratios=[1.5, 1, 1.2], sharey="row"
    )
    for c, ev in enumerate(shown):
        _draw_evidence(axes[0, c], axes[1, c], axes[2, c], ev)
    axes[0, 0].set_ylabel("realised test risk (%)")
    axes[1, 0].set_ylabel("LTT: splits with\nrisk > ε (%)")
    axes[2, 0].set_ylabel("mean FLOPs\n(% of plain backbone)")
    ev = shown[0]
    keys = [
        plot.key("target: risk = ε", **TARGET),
        plot.key(f"CRC: mean over the {fmt.count(ev.splits)} splits", **CRC),
        Patch(color=CRC["color"], alpha=0.18, label="CRC: p10-p90 over the splits"),
        plot.key(f"LTT (δ = {fmt.pct_exact(ev.delta)}): mean risk, violation rate, FLOPs", **LTT),
        plot.key(f"δ = {fmt.pct_exact(ev.delta)}", **DELTA),
        plot.key("best threshold with test risk <= ε (chosen on test)", **BEST),
    ]
    plot.legend_below(fig, keys, 3)
    fig.suptitle(
        f"{RISKS.get(risk, risk).capitalize()}: {fmt.count(ev.splits)} random splits, "
        f"{fmt.pct_exact(ev.calib_fraction)} of the held-out images to calibrate, the rest to test",
        fontsize=12.5,
    )
    return fig


class _ShiftGroup(NamedTuple):
    disturbance: str
    setting: tuple[str, str, float]
    rows: list[ShiftRow]


def _shift_groups(study: RiskResult) -> list[_ShiftGroup]:
    groups: dict[tuple[str, tuple[str, str, float]], list[ShiftRow]] = {}
    for r in _sorted_shift(study):
        groups.setdefault((r.disturbance, _setting(r, study.config)), []).append(r)
    return [_ShiftGroup(name, setting, rows) for (name, setting), rows in groups.items()]


def _draw_shift(ax_risk: Axes, ax_flops: Axes, g: _ShiftGroup) -> None:
    levels = sorted({r.level for r in g.rows})
    x = dict(
        zip(levels, level_axis(ax_flops, _name(g.disturbance), "corruption", levels), strict=True)
    )
    ax_risk.axhline(100.0 * g.setting[2], **TARGET, zorder=2)
    for method in dict.fromkeys(r.method for r in g.rows):
        rows = [r for r in g.rows if r.method == method]
        xs, style = [x[r.level] for r in rows], METHOD_LINES[method]
        for attrs, color in (
            (("clean_calibrated_risk", "clean_calibrated_flops_fraction"), CLEAN),
            (("recalibrated_risk", "recalibrated_flops_fraction"), RECALIBRATED),
        ):
            for ax, attr in zip((ax_risk, ax_flops), attrs, strict=True):
                values = _percent([getattr(r, attr) for r in rows])
                ax.plot(xs, values, **style, **color, zorder=3)
    ax_risk.set_ylim(bottom=0)
    ax_risk.tick_params(labelbottom=False)
    ax_flops.axhline(100.0, color="#999999", lw=0.8)
    ax_risk.set_title(
        f"{disturbance_label(g.disturbance)}\n{_setting_text(g.setting)}", fontsize=10.5
    )


def shift_figure(study: RiskResult) -> Figure | None:
    """Under blur and noise: realised risk (top) and mean FLOPs (bottom) against the level, with
    thresholds calibrated on clean images and recalibrated on the disturbed ones; a column per
    disturbance (and setting). ``None`` without shift rows."""
    groups = _shift_groups(study)
    if not groups:
        return None
    cols = len(groups)
    fig, axes = plot.subplots(
        2, cols, (max(8.0, 4.6 * cols), 7.2), height_ratios=[1.3, 1], sharey="row"
    )
    for c, g in enumerate(groups):
        _draw_shift(axes[0, c], axes[1, c], g)
    axes[0, 0].set_ylabel("realised test risk (%)")
    axes[1, 0].set_ylabel("mean FLOPs\n(% of plain backbone)")
    methods = list(dict.fromkeys(r.method for r in study.shift))
    keys = [plot.key("target: risk = ε", **TARGET)]
    keys += [
        plot.key(f"{METHODS[m]}, {where}", **METHOD_LINES[m], **color)
        for m in methods
        for where, color in (("calibrated on clean images", CLEAN), ("recalibrated", RECALIBRATED))
    ]
    plot.legend_below(fig, keys, min(len(keys), 3))
    fig.suptitle("Thresholds under distribution shift", fontsize=12.5)
    return fig


def render_figures(study: RiskResult) -> dict[str, bytes]:
    """``{file name: PNG bytes}``: one evidence figure per risk (in the evidence's order), then
    the shift figure."""
    risks = dict.fromkeys(ev.risk for ev in study.evidence)
    builders = {f"risk_{fmt.safe_name(k)}.png": partial(evidence_figure, study, k) for k in risks}
    return plot.render_figures({**builders, "risk_shift.png": partial(shift_figure, study)})


# -------------------------------------------------------------------------------------- tables


def _fits_csv(fits: Sequence[RiskFitResult], side_exits: int) -> bytes:
    names = [f.name for f in dataclasses.fields(RiskFitResult) if f.name != "thresholds"]
    header = [*names, *(f"threshold_exit_{i}" for i in range(side_exits))]
    # csv writes None as an empty cell
    return csv_bytes(header, [[getattr(f, n) for n in names] + list(f.thresholds) for f in fits])


def tables(study: RiskResult) -> dict[str, bytes]:
    """``risk_fitted.csv``, ``risk_recalibrated.csv`` (one row per rule, a threshold column per
    side exit), ``risk_evidence.csv`` (one row per risk, rule and epsilon), ``risk_shift.csv``
    (with the epsilon each row was calibrated for); the recalibrated and shift tables only when
    the study has such rows."""
    side = _side_exits([*study.fitted, *study.recalibrated])
    attrs = [f.name for f in dataclasses.fields(EvidenceRow)]
    head = ["risk", "rule", "delta", "splits", "calib_fraction"]
    evidence = [
        [ev.risk, ev.rule, ev.delta, ev.splits, ev.calib_fraction, *(getattr(r, a) for a in attrs)]
        for ev in study.evidence
        for r in sorted(ev.rows, key=lambda r: r.epsilon)
    ]
    shift_attrs = [f.name for f in dataclasses.fields(ShiftRow) if f.name != "epsilon"]
    shift = [
        [getattr(r, a) for a in shift_attrs] + [_setting(r, study.config)[2]]
        for r in _sorted_shift(study)
    ]
    out = {
        "risk_fitted.csv": _fits_csv(study.fitted, side),
        "risk_recalibrated.csv": _fits_csv(study.recalibrated, side),
        "risk_evidence.csv": csv_bytes(head + attrs, evidence),
        "risk_shift.csv": csv_bytes([*shift_attrs, "epsilon"], shift),
    }
    present = {"risk_recalibrated.csv": study.recalibrated, "risk_shift.csv": study.shift}
    return {name: data for name, data in out.items() if present.get(name, True)}


# ---------------------------------------------------------------------------------------- page


def _count_within(fits: Sequence[RiskFitResult]) -> tuple[int, int]:
    measured = [(f.test_risk, f.epsilon) for f in fits if f.test_risk is not None]
    return sum(risk <= eps for risk, eps in measured), len(measured)


def _worst(fits: Sequence[RiskFitResult]) -> RiskFitResult | None:
    over = [f for f in fits if f.test_risk is not None and f.test_risk > f.epsilon]
    return max(over, key=lambda f: (f.test_risk or 0.0) - f.epsilon, default=None)


def _user_fits(study: RiskResult) -> list[tuple[RiskFitResult, RiskFitResult | None]]:
    """The fitted rules of the user's method, rule and epsilon (one per risk), each with its
    recalibrated twin when there is one."""
    c = study.config

    def key(f: RiskFitResult) -> tuple[str, str, str, float]:
        return f.method, f.risk, f.rule, f.epsilon

    twins = {key(f): f for f in study.recalibrated}
    return [
        (f, twins.get(key(f)))
        for f in study.fitted
        if (f.method, f.rule, f.epsilon) == (c.user_method, c.user_rule, c.user_epsilon)
    ]


def _evidence_summary(study: RiskResult) -> dict[str, int]:
    rows = [(ev, r) for ev in study.evidence for r in ev.rows]
    return {
        "settings": len(rows),
        "crc_within": sum(r.crc_mean_risk <= r.epsilon for _, r in rows),
        "ltt_within": sum(r.ltt_violation_rate <= ev.delta for ev, r in rows),
    }


def _shift_sentences(study: RiskResult) -> list[dict[str, Any]]:
    """Per disturbance and setting, its strongest level with the user's method (else the first)."""
    out = []
    for g in _shift_groups(study):
        strongest = [r for r in g.rows if r.level == max(r.level for r in g.rows)]
        row = next((r for r in strongest if r.method == study.config.user_method), strongest[0])
        out.append(
            {
                "row": row,
                "epsilon": g.setting[2],
                "level": level_text(_name(row.disturbance), row.level),
            }
        )
    return out


def _page(study: RiskResult, figures: dict[str, bytes]) -> bytes:
    header, shift_rows, shift_setting = shift_table(study)
    return render_page(
        RISK_FILE,
        title=study.title or "Risk control",
        study=study,
        c=study.config,
        figures=embed(figures),
        user_fits=_user_fits(study),
        fitted=[fit_cells(f) for f in study.fitted],
        fitted_source=fits_source(study.fitted),
        recalibrated=[fit_cells(f) for f in study.recalibrated],
        recalibrated_source=fits_source(study.recalibrated),
        within=_count_within(study.fitted),
        within_recalibrated=_count_within(study.recalibrated),
        worst=_worst(study.fitted),
        evidence=[
            (
                evidence_title(ev),
                [evidence_cells(r, ev.delta) for r in sorted(ev.rows, key=lambda r: r.epsilon)],
            )
            for ev in study.evidence
        ],
        evidence_summary=_evidence_summary(study),
        fit_header=fit_header([*study.fitted, *study.recalibrated]),
        evidence_header=EVIDENCE_HEADER,
        shift_header=header,
        shift_rows=shift_rows,
        shift_setting=shift_setting,
        shift_sentences=_shift_sentences(study),
        methods=METHODS,
        rules=RULES,
        risks=RISKS,
        label=disturbance_label,
        notes=[],
    )


def write_risk_report(result: RiskResult, out_dir: str | Path) -> Path:
    """Write the figures, the CSV tables and ``risk.html`` into ``out_dir``; returns the page's
    path. All is rendered before the first write: a failure writes nothing."""
    figures = render_figures(result)
    page = _page(result, figures)
    return write_files(out_dir, {**tables(result), **figures, RISK_FILE: page})[-1]
