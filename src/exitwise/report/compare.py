"""Render a run comparison (:func:`exitwise.experiments.compare.compare_runs`): Markdown tables,
one accuracy-versus-FLOPs figure with every run's test Pareto fronts, and the JSON itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exitwise.report.plots import (
    _OUTLINE,
    _STYLE,
    BACKBONE_COLOR,
    POLICY_COLORS,
    POLICY_MARKERS,
    _pareto_steps,
    figure_png,
    plt,
)

__all__ = ["comparison_figure", "comparison_markdown", "write_comparison"]

_LINESTYLES = ("-", "--", ":", "-.")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _shares(shares: list[float]) -> str:
    return " / ".join(f"{100 * s:.0f}%" for s in shares)


def comparison_markdown(comparison: Mapping[str, Any]) -> str:
    """Markdown tables: runs at each FLOPs budget, then the cheapest point within tolerance."""
    ref = comparison["reference"]
    tol = comparison["tolerance"]
    goal = comparison.get("goal_fraction")
    lines = [
        f"Reference: `{ref['run']}` final exit, test {_pct(ref['accuracy'])} "
        f"(validation {_pct(ref['val_accuracy'])}), {ref['flops'] / 1e6:.1f} MFLOPs per image "
        f"= 100%. Test set: {comparison['dataset']['name']}, "
        f"{comparison['dataset']['num_samples']} images. Every threshold is chosen on the "
        "validation split; the figures are test figures at that threshold.",
        "",
        "**At equal mean FLOPs** (the most accurate threshold on validation whose mean FLOPs fit "
        "the budget):",
        "",
        "| budget | run | policy | threshold | test accuracy | vs reference | mean FLOPs | "
        "exit shares |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in comparison["at_budget"]:
        if r.get("threshold") is None:
            lines.append(
                f"| {100 * r['budget']:.0f}% | {r['run']} | {r['policy']} | - | - | - | - | "
                f"{r['note']} |"
            )
            continue
        lines.append(
            f"| {100 * r['budget']:.0f}% | {r['run']} | {r['policy']} | {r['threshold']:g} | "
            f"{_pct(r['accuracy'])} | {100 * r['delta_vs_reference']:+.2f} pt | "
            f"{100 * r['flops_fraction']:.1f}% | {_shares(r['exit_shares'])} |"
        )
    head = (
        f"**Cheapest threshold within {100 * tol:.1f} points of the reference** (on validation)"
        + (
            f"; goal: within {100 * tol:.1f} points on test at <= {100 * goal:.0f}% of the FLOPs"
            if goal is not None
            else ""
        )
        + ":"
    )
    lines += [
        "",
        head,
        "",
        "| run | policy | threshold | test accuracy | vs reference | mean FLOPs | exit shares"
        + (" | goal |" if goal is not None else " |"),
        "|---|---|---:|---:|---:|---:|---|" + ("---|" if goal is not None else ""),
    ]
    for r in comparison["goal"]:
        met = "" if goal is None else (" met |" if r.get("met") else " not met |")
        if r.get("threshold") is None:
            lines.append(f"| {r['run']} | {r['policy']} | - | - | - | - | {r['note']} |" + met)
            continue
        lines.append(
            f"| {r['run']} | {r['policy']} | {r['threshold']:g} | {_pct(r['accuracy'])} | "
            f"{100 * r['delta_vs_reference']:+.2f} pt | {100 * r['flops_fraction']:.1f}% | "
            f"{_shares(r['exit_shares'])} |" + met
        )
    return "\n".join(lines) + "\n"


def comparison_figure(comparison: Mapping[str, Any]):
    """Test accuracy against mean FLOPs (% of the reference backbone): each run's Pareto front
    per policy (one line style per run, one colour per policy), its single exits, the reference,
    and the validation-chosen points at each budget."""
    ref = comparison["reference"]
    policies = sorted({p for run in comparison["runs"].values() for p in run["pareto"]})
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(9, 5.8), layout="constrained")
        x_end = 100.0 * max(
            [1.0]
            + [e["flops_fraction"] for run in comparison["runs"].values() for e in run["exits"]]
        )
        for j, (name, run) in enumerate(comparison["runs"].items()):
            ls = _LINESTYLES[j % len(_LINESTYLES)]
            for pol_name, pareto in run["pareto"].items():
                i = policies.index(pol_name)
                px, py = _pareto_steps(pareto, x_end)
                ax.step(
                    px,
                    py,
                    where="post",
                    ls=ls,
                    lw=2,
                    color=POLICY_COLORS[i % len(POLICY_COLORS)],
                    path_effects=_OUTLINE,
                    label=f"{name}: {pol_name} (test Pareto front)",
                )
            ax.plot(
                [100 * e["flops_fraction"] for e in run["exits"]],
                [100 * e["accuracy"] for e in run["exits"]],
                ls="none",
                marker="x",
                ms=8,
                color="0.35",
                mew=2 if j == 0 else 1,
                label=f"{name}: single exits",
            )
            chosen = [
                r
                for r in comparison["at_budget"]
                if r["run"] == name and r.get("threshold") is not None
            ]
            for k, r in enumerate(chosen):
                i = policies.index(r["policy"])
                ax.scatter(
                    [100 * r["flops_fraction"]],
                    [100 * r["accuracy"]],
                    s=70,
                    zorder=6,
                    marker=POLICY_MARKERS[j % len(POLICY_MARKERS)],
                    color=POLICY_COLORS[i % len(POLICY_COLORS)],
                    edgecolors="black",
                    linewidths=0.8,
                    label=f"{name}: chosen on validation, per budget" if k == 0 else None,
                )
        ax.scatter(
            [100.0],
            [100 * ref["accuracy"]],
            marker="*",
            s=260,
            color=BACKBONE_COLOR,
            zorder=7,
            label=f"reference {ref['run']} (final exit)",
        )
        tol = comparison["tolerance"]
        ax.axhline(
            100 * (ref["accuracy"] - tol),
            color=BACKBONE_COLOR,
            lw=0.8,
            ls=":",
            label=f"reference - {100 * tol:.1f} pt",
        )
        if comparison.get("goal_fraction") is not None:
            ax.axvline(100 * comparison["goal_fraction"], color="0.5", lw=0.8, ls="--")
        accs = [100 * ref["accuracy"]] + [
            100 * p["accuracy"]
            for run in comparison["runs"].values()
            for pareto in run["pareto"].values()
            for p in pareto
        ]
        top = max(accs)
        ax.set_ylim(max(min(accs), top - 15) - 0.5, top + 0.7)
        ax.set_xlim(0, x_end + 3)
        ax.set_xlabel("mean FLOPs, % of the reference backbone (FLOPs = 2 x MACs)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(
            "Test accuracy vs mean FLOPs; filled markers: thresholds chosen on validation"
            " per budget",
            fontsize=10,
        )
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def write_comparison(comparison: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write comparison.json, comparison.md and comparison.png into ``out_dir`` (atomically)."""
    from exitwise.report import _atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "comparison.json": json.dumps(comparison, indent=2).encode(),
        "comparison.md": comparison_markdown(comparison).encode(),
        "comparison.png": figure_png(comparison_figure(comparison)),
    }
    paths = []
    for name, data in files.items():
        _atomic_write(out / name, data)
        paths.append(out / name)
    return paths
