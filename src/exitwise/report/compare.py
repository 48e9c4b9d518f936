"""A run comparison (:class:`~exitwise.results.ComparisonResult`): the JSON itself, Markdown
tables, one accuracy-versus-FLOPs figure with every run's test Pareto fronts, and one page."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from exitwise.report import figures as plot
from exitwise.report import format as fmt
from exitwise.report.markdown import compared_cells, comparison_markdown
from exitwise.report.pages import embed, render_page, write_files
from exitwise.results import ComparedPoint, ComparisonResult

__all__ = ["COMPARISON_FILES", "comparison_figure", "write_comparison"]

COMPARISON_FILES = ("comparison.json", "comparison.md", "comparison.png", "comparison.html")
_LINESTYLES = ("-", "--", ":", "-.")


def comparison_figure(result: ComparisonResult) -> Figure:
    """Every run's test Pareto fronts, its single exits, the reference and the chosen points."""
    c, ref = result, result.reference
    policies = sorted({p for run in c.runs.values() for p in run.pareto})
    fig, axes = plot.subplots(1, 1, (9, 5.8))
    ax = axes[0, 0]
    x_end = 100.0 * max([1.0] + [e.flops_fraction for run in c.runs.values() for e in run.exits])
    for j, (name, run) in enumerate(c.runs.items()):
        for policy, front in run.pareto.items():
            px, py = plot.pareto_steps(
                [(100 * p.flops_fraction, 100 * p.accuracy) for p in front], x_end
            )
            ax.step(
                px,
                py,
                where="post",
                ls=_LINESTYLES[j % len(_LINESTYLES)],
                lw=2,
                color=plot.policy_style(policies.index(policy))[0],
                path_effects=plot.OUTLINE,
                label=f"{name}: {policy} (test Pareto front)",
            )
        ax.plot(
            [100 * e.flops_fraction for e in run.exits],
            [100 * e.accuracy for e in run.exits],
            ls="none",
            marker="x",
            ms=8,
            color="0.35",
            mew=2 if j == 0 else 1,
            label=f"{name}: single exits",
        )
        chosen = [p for p in c.at_budget if p.run == name and p.accuracy is not None]
        for k, p in enumerate(chosen):
            ax.scatter(
                [100 * (p.flops_fraction or 0.0)],
                [100 * (p.accuracy or 0.0)],
                s=70,
                zorder=6,
                marker=plot.policy_style(j)[1],
                edgecolors="black",
                color=plot.policy_style(policies.index(p.policy))[0],
                linewidths=0.8,
                label=f"{name}: chosen on validation, per budget" if k == 0 else None,
            )
    ax.scatter(
        [100.0],
        [100 * ref.accuracy],
        marker="*",
        s=260,
        color=plot.BACKBONE_COLOR,
        zorder=7,
        label=f"reference {ref.run} (final exit)",
    )
    ax.axhline(
        100 * (ref.accuracy - c.tolerance),
        color=plot.BACKBONE_COLOR,
        lw=0.8,
        ls=":",
        label=f"reference - {100 * c.tolerance:.1f} pt",
    )
    if c.goal_fraction is not None:
        ax.axvline(100 * c.goal_fraction, color="0.5", lw=0.8, ls="--")
    accs = [100 * ref.accuracy] + [
        100 * p.accuracy for run in c.runs.values() for front in run.pareto.values() for p in front
    ]
    ax.set_ylim(max(min(accs), max(accs) - 15) - 0.5, max(accs) + 0.7)
    ax.set_xlim(0, x_end + 3)
    ax.set_xlabel("mean FLOPs, % of the reference backbone (FLOPs = 2 x MACs)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        "Test accuracy vs mean FLOPs; filled markers: thresholds chosen on validation per budget",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def _goal_cells(p: ComparedPoint, goal: float | None) -> list[str]:
    """The compared cells, with whether the goal is met before the (wide) exit shares."""
    cells = compared_cells(p)
    met = [] if goal is None else ["met" if p.met else "not met"]
    return [*cells[:-1], *met, cells[-1]]


def _page(result: ComparisonResult, png: bytes) -> bytes:
    ref = result.reference
    return render_page(
        "comparison.html",
        title=f"{', '.join(result.runs)} against {ref.run}",
        c=result,
        at_budget=[
            [fmt.pct(p.budget, 0), p.run, p.policy, *compared_cells(p)] for p in result.at_budget
        ],
        goal=[[p.run, p.policy, *_goal_cells(p, result.goal_fraction)] for p in result.goal],
        figures=embed({"comparison.png": png}),
        notes=[],
    )


def write_comparison(result: ComparisonResult, out_dir: str | Path) -> list[Path]:
    """Write ``comparison.json`` (``result.save``), ``comparison.md``, ``comparison.png`` and
    ``comparison.html`` into ``out_dir``, each atomically, the page last.

    Everything is rendered before the first file is written, so a failure writes nothing.
    """
    png = plot.render_figures({"comparison.png": lambda: comparison_figure(result)})[
        "comparison.png"
    ]
    files = {"comparison.md": comparison_markdown(result).encode("utf-8"), "comparison.png": png}
    page = _page(result, png)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = result.save(out / "comparison.json")
    return [json_path, *write_files(out, {**files, "comparison.html": page})]
