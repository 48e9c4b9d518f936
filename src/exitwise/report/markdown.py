"""Markdown tables of the typed results, for docs and notes (what ``exitwise summary`` and
``exitwise compare`` print). Numbers go through the same formatters as the pages, and the tables
the pages share (ECE, fitted risk rules, evidence, shift) take their cells from the same
functions."""

from __future__ import annotations

from collections.abc import Sequence

from exitwise.report import format as fmt
from exitwise.report.calibration import ece_header, ece_rows
from exitwise.report.efficiency import headline_point, parameter_name
from exitwise.report.risk import (
    EVIDENCE_HEADER,
    evidence_cells,
    evidence_title,
    fit_cells,
    fit_header,
    fits_source,
    shift_table,
)
from exitwise.report.robustness import disturbance_label, groups, level_text
from exitwise.results import (
    ComparedPoint,
    ComparisonResult,
    EfficiencyResult,
    OperatingPoint,
    PolicyResult,
    RiskResult,
    RobustnessResult,
)

__all__ = [
    "calibration_markdown",
    "comparison_markdown",
    "efficiency_markdown",
    "operating_points_markdown",
    "risk_markdown",
    "robustness_markdown",
    "rows_table",
]


def _table(header: Sequence[str], align: str, rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table; ``align`` has one letter per column: ``l`` left, ``r`` right."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def rows_table(header: Sequence[str], left: int, rows: Sequence[Sequence[object]]) -> list[str]:
    """:func:`_table` with the first ``left`` columns left-aligned, the others right."""
    return _table(header, "l" * left + "r" * (len(header) - left), rows)


def calibration_markdown(result: EfficiencyResult) -> str:
    """The ECE table: per exit its temperature, ECE before and after scaling and with the global
    temperature, NLL before and after, the committee's weight; ``""`` without a calibration."""
    cal = result.calibration
    if cal is None:
        return ""
    lines = [
        f"Temperature scaling, fitted by NLL on {cal.fitted_on}; ECE ({cal.bins} equal-width "
        f"bins) and NLL on the {result.dataset.split} split.",
        "",
        *rows_table(ece_header(cal), 1, ece_rows(cal)),
    ]
    return "\n".join(lines) + "\n"


def _shown_points(r: EfficiencyResult) -> list[tuple[str, PolicyResult, OperatingPoint]]:
    """Each policy's chosen and default points; a policy with neither shows its headline point,
    tagged as picked on the test split."""
    out = []
    for name, policy in r.policies.items():
        points = [(name, policy.chosen), (f"{name} (default)", policy.default)]
        if policy.chosen is None and policy.default is None and policy.sweep:
            point, _ = headline_point(policy, r.backbone.accuracy)
            points = [(f"{name} (picked on test)", point)]
        out += [(tag, policy, p) for tag, p in points if p is not None]
    return out


def _setting(name: str, policy: PolicyResult, p: OperatingPoint) -> str:
    """``"0.98"``, or with what the value is when it is not a threshold: ``"patience 2"``."""
    word = parameter_name(name, policy)
    value = fmt.threshold(p.threshold)
    return value if word == "threshold" else f"{word} {value}"


def efficiency_markdown(result: EfficiencyResult) -> str:
    """The exits (accuracy and cost), the calibration (with one), then each policy's chosen (and
    default) point, its per-exit thresholds where it has them, and the oracle."""
    r, bb = result, result.costs.backbone_flops
    lines = [f"### {r.title}", ""]
    t = r.training
    if t is not None:
        threads = f", {fmt.listing(t.threads)} threads" if t.threads else ""
        lines.append(
            f"Trained {t.epochs} epochs in {fmt.duration(t.seconds)} on {fmt.listing(t.device)} "
            f"({t.machine}{threads})."
        )
    if r.command:
        lines.append(f"Evaluated by `{r.command}` on {r.dataset.num_samples} test images.")
    scale, unit = fmt.flops_unit(bb)
    macs = unit.replace("FLOPs", "MACs")
    rows = [
        [
            e.exit,
            e.block,
            fmt.pct(e.accuracy, 2),
            fmt.number(e.path_flops / scale),
            fmt.number(m / scale),
            fmt.pct(e.path_flops / bb),
        ]
        for e, m in zip(r.exits, r.costs.path_macs, strict=True)
    ]
    header = ["exit", "after", "test accuracy", f"{unit} to reach", macs, "% of backbone"]
    lines += ["", *_table(header, "rlrrrr", rows), ""]
    lines += [
        f"Plain backbone: {fmt.flops(bb)} ({fmt.flops(r.costs.backbone_macs, 'MACs')}) per image.",
        "",
    ]
    if r.calibration is not None:
        lines += [calibration_markdown(r).rstrip("\n"), ""]
    shown = _shown_points(r)
    per_exit = any(p.thresholds is not None for *_, p in shown)
    rows = [
        [
            tag,
            _setting(tag.partition(" (")[0], policy, p),
            *([fmt.thresholds(p.thresholds)] if per_exit else []),
            fmt.pct(p.accuracy, 2),
            fmt.pct(p.flops_fraction),
            fmt.shares(p.exit_shares),
        ]
        for tag, policy, p in shown
    ]
    o = r.oracle
    oracle = ["oracle", "-", *(["-"] if per_exit else []), fmt.pct(o.accuracy, 2)]
    rows.append([*oracle, fmt.pct(o.flops_fraction), fmt.shares(o.exit_shares)])
    header = [
        "policy",
        "threshold (chosen on validation)",
        *(["per-exit thresholds"] if per_exit else []),
        "test accuracy",
        "mean FLOPs, % of backbone",
        "exit shares",
    ]
    align = "lr" + "r" * per_exit + "rrl"
    lines += _table(header, align, rows)
    final = r.exits[-1].accuracy
    ratios = [
        [tag, fmt.points(p.accuracy - final), f"{p.mean_flops / o.mean_flops:.2f}x"]
        for tag, _, p in shown
        if o.mean_flops > 0 and not tag.endswith(")")
    ]
    if ratios:
        lines += ["", *rows_table(["policy", "vs final exit", "mean FLOPs / oracle's"], 1, ratios)]
    return "\n".join(lines) + "\n"


def operating_points_markdown(result: EfficiencyResult, thresholds: Sequence[float]) -> str:
    """Every rule's test point at the given thresholds (e.g. seed 002's alpha 0.8 and 0.9):
    accuracy, the share of images that leave at a side exit, and mean FLOPs."""
    rows = []
    for t in thresholds:
        for name, policy in result.policies.items():
            for p in policy.sweep:
                if p.thresholds is None and p.threshold == t:
                    side = 1.0 - p.exit_shares[-1]
                    rows.append(
                        [name, fmt.threshold(t), fmt.pct(p.accuracy, 2), fmt.pct(side),
                         fmt.pct(p.flops_fraction)]
                    )  # fmt: skip
    header = ["policy", "threshold", "test accuracy", "left at a side exit", "mean FLOPs, %"]
    return "\n".join(rows_table(header, 1, rows)) + "\n"


def risk_markdown(result: RiskResult) -> str:
    """The fitted rules (calibrated on validation, measured on test), the same recalibrated on
    the test distribution, the evidence over random splits per risk and rule, and the shift."""
    c = result.config
    lines = [
        f"### {result.title or 'Risk control'}",
        "",
        f"Target risk ε {', '.join(fmt.pct_exact(e) for e in c.epsilons)}; LTT's δ = "
        f"{fmt.pct_exact(c.delta)}; temperatures "
        f"{' / '.join(fmt.number(t) for t in c.temperatures)} (fitted on validation).",
    ]
    if result.command:
        lines[-1] += f" Printed by `{result.command}`."
    for title, fits in (("Fitted rules", result.fitted), ("Recalibrated", result.recalibrated)):
        if fits:
            lines += ["", f"**{title}** ({fits_source(fits)}):", ""]
            lines += rows_table(fit_header(fits), 3, [fit_cells(f) for f in fits])
    for ev in result.evidence:
        rows = [evidence_cells(row, ev.delta) for row in sorted(ev.rows, key=lambda r: r.epsilon)]
        lines += [
            "",
            f"**Evidence**, {evidence_title(ev)}:",
            "",
            *rows_table(EVIDENCE_HEADER, 1, rows),
        ]
    header, rows, setting = shift_table(result)
    if rows:
        under = f" ({setting})" if setting else ""
        lines += ["", f"**Under distribution shift**{under}:", "", *rows_table(header, 3, rows)]
    return "\n".join(lines) + "\n"


def robustness_markdown(study: RobustnessResult) -> str:
    """Per disturbance and level: backbone and routed accuracy and the routed FLOPs; then what
    each slowdown epsilon does to the FLOPs saving, routed and capped."""
    rows = [
        [
            disturbance_label(key),
            level_text(r.name, r.level),
            fmt.pct(r.backbone_accuracy),
            fmt.pct(r.routed.accuracy),
            fmt.pct(r.routed.flops_fraction, 0),
        ]
        for key, group in groups(study)
        for r in group
    ]
    header = [
        "disturbance",
        "level",
        "backbone accuracy",
        "routed accuracy",
        "FLOPs, % of backbone",
    ]
    lines = [f"### {study.title or 'Robustness study'}", "", *_table(header, "llrrr", rows)]
    if study.slowdown:
        lines.append("")
    for row in sorted(study.slowdown, key=lambda e: e.eps):
        p, c = row.routed, row.capped
        line = (
            f"- slowdown {level_text('slowdown', row.eps)}: FLOPs {fmt.pct(p.flops_fraction, 0)} "
            f"of the backbone, saving erased {fmt.pct(p.saving_erased, 0)}, accuracy "
            f"{fmt.pct(p.accuracy)}"
        )
        if c is not None:
            line += (
                f"; capped: FLOPs {fmt.pct(c.flops_fraction, 0)}, erased "
                f"{fmt.pct(c.saving_erased, 0)}, accuracy {fmt.pct(c.accuracy)}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def compared_cells(p: ComparedPoint) -> list[str]:
    """Threshold, test accuracy, difference to the reference, mean FLOPs and exit shares of a
    compared point (dashes and the note when no threshold qualified)."""
    if p.threshold is None:
        return ["-", "-", "-", "-", p.note or ""]
    return [
        fmt.threshold(p.threshold),
        fmt.pct(p.accuracy, 2),
        fmt.points(p.delta_vs_reference, 2),
        fmt.pct(p.flops_fraction),
        fmt.shares(p.exit_shares),
    ]


def comparison_markdown(result: ComparisonResult) -> str:
    """Runs at each FLOPs budget, then the cheapest threshold within tolerance of the
    reference (and whether it meets the goal)."""
    ref, tol, goal = result.reference, result.tolerance, result.goal_fraction
    lines = [
        f"Reference: `{ref.run}` final exit, test {fmt.pct(ref.accuracy, 2)} (validation "
        f"{fmt.pct(ref.val_accuracy, 2)}), {fmt.flops(ref.flops)} per image = 100%. Test set: "
        f"{result.dataset}, {result.num_samples} images. Every threshold is chosen on the "
        "validation split; the figures are test figures at that threshold.",
        "",
        "**At equal mean FLOPs** (the most accurate threshold on validation whose mean FLOPs fit "
        "the budget):",
        "",
    ]
    header = [
        "budget",
        "run",
        "policy",
        "threshold",
        "test accuracy",
        "vs reference",
        "mean FLOPs",
        "exit shares",
    ]
    rows = [[fmt.pct(p.budget, 0), p.run, p.policy, *compared_cells(p)] for p in result.at_budget]
    lines += _table(header, "rllrrrrl", rows)
    within = f"within {100 * tol:.1f} points"
    aim = f"; goal: {within} on test at <= {fmt.pct(goal, 0)} of the FLOPs" if goal else ""
    lines += ["", f"**Cheapest threshold {within} of the reference** (on validation){aim}:", ""]
    header = header[1:] + (["goal"] if goal is not None else [])
    met = {True: "met", False: "not met", None: "not met"}
    rows = [
        [p.run, p.policy, *compared_cells(p)] + ([met[p.met]] if goal is not None else [])
        for p in result.goal
    ]
    return "\n".join(lines + _table(header, "llrrrrl" + "l" * (goal is not None), rows)) + "\n"
