"""Markdown tables of the typed results, for docs and notes (what ``exitwise summary`` and
``exitwise compare`` print). Numbers go through the same formatters as the pages."""

from __future__ import annotations

from collections.abc import Sequence

from exitwise.report import format as fmt
from exitwise.report.robustness import disturbance_label, groups, level_text
from exitwise.results import ComparedPoint, ComparisonResult, EfficiencyResult, RobustnessResult

__all__ = ["comparison_markdown", "efficiency_markdown", "robustness_markdown"]


def _table(header: Sequence[str], align: str, rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table; ``align`` has one letter per column: ``l`` left, ``r`` right."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def efficiency_markdown(result: EfficiencyResult) -> str:
    """The exits (accuracy and cost), then each policy's chosen (and default) point and the
    oracle."""
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
    rows = []
    for name, policy in r.policies.items():
        for tag, p in (("", policy.chosen), (" (default)", policy.default)):
            if p is not None:
                rows.append(
                    [
                        f"{name}{tag}",
                        fmt.threshold(p.threshold),
                        fmt.pct(p.accuracy, 2),
                        fmt.pct(p.flops_fraction),
                        fmt.shares(p.exit_shares),
                    ]
                )
    o = r.oracle
    rows.append(
        [
            "oracle",
            "-",
            fmt.pct(o.accuracy, 2),
            fmt.pct(o.flops_fraction),
            fmt.shares(o.exit_shares),
        ]
    )
    header = [
        "policy",
        "threshold (chosen on validation)",
        "test accuracy",
        "mean FLOPs, % of backbone",
        "exit shares",
    ]
    return "\n".join(lines + _table(header, "lrrrl", rows)) + "\n"


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
