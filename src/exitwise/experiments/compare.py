"""Compare early-exit runs at equal mean FLOPs, and against a plain backbone.

Works on the ``evaluation.json`` files written by :func:`efficiency_study`; no model is loaded.
Every operating point is chosen on the validation split (its ``val_sweep``) and reported with
its test numbers, looked up at the same threshold in the test ``sweep``; the test split never
chooses anything.

Two questions are answered for every run and exit policy:

* **at a FLOPs budget** (a fraction of the reference backbone's FLOPs): the threshold with the
  best validation accuracy whose validation mean FLOPs fit the budget - so two runs are compared
  at equal mean FLOPs;
* **goal**: the cheapest threshold whose validation accuracy is within ``tolerance`` of the
  reference's (the plain network's) validation accuracy, with its test accuracy and FLOPs, and
  whether, on test, it stays within the tolerance at no more than ``goal_fraction`` of the FLOPs.

FLOPs fractions are always taken against the *reference's* backbone FLOPs (the plain network's,
or else the first run's), so runs on different backbones share one axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exitwise.errors import InputError
from exitwise.results import (
    ComparedPoint,
    ComparisonResult,
    CurvePoint,
    EfficiencyResult,
    OperatingPoint,
    PolicyResult,
    ReferenceInfo,
    RunCurves,
)

__all__ = ["CompareError", "compare_runs", "pick_within_budget", "pick_within_tolerance"]


class CompareError(InputError):
    """The evaluations cannot be compared (missing validation sweeps, other dataset, ...)."""


def pick_within_budget(points: Sequence[OperatingPoint], max_flops: float) -> OperatingPoint | None:
    """The most accurate point with ``mean_flops <= max_flops`` (cheaper wins ties); None if
    no point fits."""
    fit = [p for p in points if p.mean_flops <= max_flops]
    if not fit:
        return None
    return max(fit, key=lambda p: (p.accuracy, -p.mean_flops))


def pick_within_tolerance(
    points: Sequence[OperatingPoint], min_accuracy: float
) -> OperatingPoint | None:
    """The cheapest point with ``accuracy >= min_accuracy`` (more accurate wins ties); None if
    no point reaches it."""
    ok = [p for p in points if p.accuracy >= min_accuracy]
    if not ok:
        return None
    return min(ok, key=lambda p: (p.mean_flops, -p.accuracy))


def _test_point(policy: PolicyResult, threshold: float) -> OperatingPoint:
    for p in policy.sweep:
        if p.threshold == threshold:
            return p
    raise CompareError(f"threshold {threshold} is in the validation sweep but not the test sweep")


def _row(
    run: str,
    policy: str,
    val: OperatingPoint,
    test: OperatingPoint,
    ref: ReferenceInfo,
    budget: float | None = None,
    goal_fraction: float | None = None,
    tolerance: float = 0.0,
) -> ComparedPoint:
    delta = test.accuracy - ref.accuracy
    fraction = test.mean_flops / ref.flops
    met = None  # a goal row is met within the tolerance and the FLOPs goal
    if goal_fraction is not None:
        met = bool(delta >= -tolerance - 1e-12 and fraction <= goal_fraction)
    return ComparedPoint(
        run=run,
        policy=policy,
        threshold=val.threshold,
        budget=budget,
        val_accuracy=val.accuracy,
        val_flops_fraction=val.mean_flops / ref.flops,
        accuracy=test.accuracy,
        mean_flops=test.mean_flops,
        flops_fraction=fraction,
        delta_vs_reference=delta,
        exit_shares=tuple(test.exit_shares),
        met=met,
    )


def _reference(ev: EfficiencyResult, name: str) -> ReferenceInfo:
    bb = ev.backbone
    if bb.val_accuracy is None:
        raise CompareError(
            f"{name}: evaluation.json has no validation accuracy (evaluated without a "
            f"validation split): run `exitwise evaluate` on it again"
        )
    return ReferenceInfo(name, bb.accuracy, bb.val_accuracy, bb.flops)


def _curves(ev: EfficiencyResult, ref_flops: float) -> RunCurves:
    return RunCurves(
        title=ev.title,
        exits=[CurvePoint(e.accuracy, e.path_flops / ref_flops) for e in ev.exits],
        pareto={
            name: [CurvePoint(p.accuracy, p.mean_flops / ref_flops) for p in pol.pareto]
            for name, pol in ev.policies.items()
        },
    )


def compare_runs(
    runs: Mapping[str, EfficiencyResult],
    budgets: Sequence[float] = (0.2, 0.3, 0.4, 0.5),
    reference: tuple[str, EfficiencyResult] | None = None,
    tolerance: float = 0.005,
    goal_fraction: float | None = None,
) -> ComparisonResult:
    """Compare the evaluations ``runs`` (name -> evaluation) at equal mean FLOPs.

    ``reference`` is ``(name, evaluation)`` of the plain network (its final exit is the
    reference accuracy); without one, the first run's final exit is the reference.
    ``budgets`` are fractions of the reference backbone's FLOPs. ``goal_fraction`` (e.g. 0.3)
    adds a pass/fail of "within ``tolerance`` of the reference at <= that fraction of its FLOPs"
    on the test split.
    """
    if not runs:
        raise CompareError("no runs to compare")
    bad = [b for b in budgets if not 0 < b]
    if bad:
        raise CompareError(f"FLOPs budgets are positive fractions of the backbone, got {bad}")
    if not 0 <= tolerance < 1:
        raise CompareError(f"tolerance is a fraction in [0, 1) (0.005 = 0.5 pt), got {tolerance}")
    ref_name, ref_ev = reference if reference is not None else next(iter(runs.items()))
    ref = _reference(ref_ev, ref_name)
    test_sets = {
        name: (ev.dataset.name, ev.dataset.num_samples)
        for name, ev in [*runs.items(), (ref_name, ref_ev)]
    }
    if len(set(test_sets.values())) > 1:
        raise CompareError(
            "runs were evaluated on different test sets: "
            + ", ".join(f"{n}: {d} ({k} images)" for n, (d, k) in test_sets.items())
        )
    ref_flops = float(ref.flops)
    at_budget: list[ComparedPoint] = []
    goal: list[ComparedPoint] = []
    for name, ev in runs.items():
        _reference(ev, name)  # same check: the run needs validation numbers
        for pol_name, pol in ev.policies.items():
            val_points = pol.val_sweep
            if not val_points:
                raise CompareError(
                    f"{name}: policy {pol_name} has no validation sweep in evaluation.json: run "
                    f"`exitwise evaluate` on it again"
                )
            for budget in budgets:
                val = pick_within_budget(val_points, budget * ref_flops)
                if val is None:
                    cheapest = min(p.mean_flops for p in val_points) / ref_flops
                    note = f"cheapest point costs {100 * cheapest:.1f}% of the FLOPs"
                    at_budget.append(ComparedPoint(name, pol_name, None, budget, note=note))
                    continue
                test = _test_point(pol, val.threshold)
                at_budget.append(_row(name, pol_name, val, test, ref, budget=budget))
            val = pick_within_tolerance(val_points, ref.val_accuracy - tolerance)
            if val is None:
                best = max(p.accuracy for p in val_points)
                note = f"no threshold reaches it on validation (best {100 * best:.2f}%)"
                met = False if goal_fraction is not None else None
                goal.append(ComparedPoint(name, pol_name, None, met=met, note=note))
                continue
            test = _test_point(pol, val.threshold)
            goal.append(
                _row(
                    name,
                    pol_name,
                    val,
                    test,
                    ref,
                    goal_fraction=goal_fraction,
                    tolerance=tolerance,
                )
            )
    dataset, num_samples = test_sets[ref_name]
    return ComparisonResult(
        reference=ref,
        tolerance=tolerance,
        goal_fraction=goal_fraction,
        budgets=list(budgets),
        dataset=dataset,
        num_samples=num_samples,
        at_budget=at_budget,
        goal=goal,
        runs={name: _curves(ev, ref_flops) for name, ev in runs.items()},
    )
