"""Comparing runs at equal mean FLOPs: points chosen on validation, reported on test."""

import dataclasses

import pytest

from exitwise.experiments.compare import (
    CompareError,
    compare_runs,
    pick_within_budget,
    pick_within_tolerance,
)
from exitwise.results import (
    BackboneResult,
    ComparisonResult,
    CostSummary,
    DatasetInfo,
    EfficiencyResult,
    ExitResult,
    ModelInfo,
    OperatingPoint,
    OracleResult,
    PolicyResult,
    ReferenceInfo,
)

BB = 1000  # backbone FLOPs of every hand-made evaluation


def pt(t, acc, flops, shares=(0.5, 0.5)):
    return OperatingPoint(t, acc, flops, flops / BB, tuple(shares))


def evaluation(val, test, final=(0.96, 0.95), name="ds", n=100, bb=BB):
    """final = (val accuracy, test accuracy) of the final exit."""
    return EfficiencyResult(
        title="t",
        dataset=DatasetInfo(name, n, 10),
        model=ModelInfo("m", "resnet", 2, ["layer1", "final classifier"], 1),
        costs=CostSummary(
            [3, 8, 8],
            [bb // 4, bb - bb // 4],
            [0, 0],
            [bb // 4, bb],
            [bb // 8, bb // 2],
            bb,
            bb // 2,
        ),
        exits=[
            ExitResult(0, "layer1", 0.8, bb // 4, 0.25),
            ExitResult(1, "final classifier", final[1], bb, 1.0),
        ],
        backbone=BackboneResult(final[1], bb, final[0]),
        oracle=OracleResult(1.0, bb / 2, 0.5, (0.5, 0.5)),
        policies={"max_probability": PolicyResult("mp", test, test, val_sweep=val)},
    )


def plain(val_acc=0.97, test_acc=0.96):
    return evaluation([pt(0, val_acc, BB)], [pt(0, test_acc, BB)], final=(val_acc, test_acc))


def test_pick_within_budget_and_tolerance():
    points = [pt(0.1, 0.90, 200), pt(0.5, 0.95, 300), pt(0.9, 0.95, 280), pt(1.0, 0.97, 600)]
    assert pick_within_budget(points, 300).threshold == 0.9  # same accuracy: cheaper
    assert pick_within_budget(points, 250).threshold == 0.1
    assert pick_within_budget(points, 100) is None
    assert pick_within_tolerance(points, 0.95).threshold == 0.9
    assert pick_within_tolerance(points, 0.99) is None


def test_thresholds_are_chosen_on_validation_and_reported_on_test():
    # On test, threshold 0.9 would be the best within 30%; on validation it is 0.5.
    val = [pt(0.5, 0.96, 290), pt(0.9, 0.93, 250), pt(1.0, 0.97, 900)]
    test = [pt(0.5, 0.94, 310), pt(0.9, 0.955, 260), pt(1.0, 0.96, 920)]
    cmp = compare_runs({"a": evaluation(val, test)}, budgets=[0.3], reference=("p", plain()))
    (row,) = cmp.at_budget
    assert row.threshold == 0.5
    assert row.accuracy == 0.94 and row.flops_fraction == pytest.approx(0.31)
    assert row.delta_vs_reference == pytest.approx(0.94 - 0.96)
    assert cmp.reference == ReferenceInfo("p", 0.96, 0.97, BB)


def test_equal_flops_comparison_of_two_runs_and_the_goal():
    val_a = [pt(0.5, 0.965, 280), pt(1.0, 0.97, 900)]
    test_a = [pt(0.5, 0.958, 290), pt(1.0, 0.961, 910)]
    val_b = [pt(0.5, 0.90, 280), pt(0.8, 0.966, 450), pt(1.0, 0.97, 900)]
    test_b = [pt(0.5, 0.91, 285), pt(0.8, 0.957, 440), pt(1.0, 0.96, 905)]
    cmp = compare_runs(
        {"a": evaluation(val_a, test_a), "b": evaluation(val_b, test_b)},
        budgets=[0.3, 0.5],
        reference=("p", plain()),
        tolerance=0.005,
        goal_fraction=0.3,
    )
    by = {(r.run, r.budget): r for r in cmp.at_budget}
    assert by["a", 0.3].accuracy == 0.958 and by["b", 0.3].accuracy == 0.91
    assert by["b", 0.5].threshold == 0.8
    goal = {r.run: r for r in cmp.goal}
    # a: val 0.965 >= 0.97 - 0.005 at 28%; test 0.958 is within 0.5 pt of 0.96 at 29%: met
    assert goal["a"].threshold == 0.5 and goal["a"].met is True
    # b: the cheapest good-enough threshold costs 44% on test: not met
    assert goal["b"].threshold == 0.8 and goal["b"].met is False
    assert ComparisonResult.from_json(cmp.to_json()) == cmp


def test_fractions_are_taken_against_the_reference_backbone():
    # A run on a backbone twice as expensive as the reference: 280 mean FLOPs are 14% of its
    # own backbone but 28% of the reference's, and the budgets are the reference's.
    ev = evaluation([pt(0.5, 0.96, 280)], [pt(0.5, 0.95, 280)], bb=2 * BB)
    cmp = compare_runs({"big": ev}, budgets=[0.2, 0.3], reference=("p", plain()))
    rows = {r.budget: r for r in cmp.at_budget}
    assert rows[0.2].threshold is None and "28.0%" in rows[0.2].note
    assert rows[0.3].flops_fraction == pytest.approx(0.28)
    assert cmp.runs["big"].exits[1].flops_fraction == pytest.approx(2.0)


def test_without_reference_the_first_run_is_the_reference():
    ev = evaluation([pt(0.5, 0.96, 280)], [pt(0.5, 0.95, 280)], final=(0.97, 0.955))
    cmp = compare_runs({"a": ev}, budgets=[0.3])
    assert cmp.reference.run == "a" and cmp.reference.accuracy == 0.955
    assert cmp.goal[0].threshold is None and "best 96.00%" in cmp.goal[0].note


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ev: ev.policies["max_probability"].val_sweep.clear(), "no validation sweep"),
        (
            lambda ev: setattr(ev, "backbone", dataclasses.replace(ev.backbone, val_accuracy=None)),
            "no validation accuracy",
        ),
        (
            lambda ev: setattr(ev, "dataset", dataclasses.replace(ev.dataset, name="other")),
            "different test sets",
        ),
        (
            lambda ev: setattr(ev, "dataset", dataclasses.replace(ev.dataset, num_samples=7)),
            "different test sets",
        ),
    ],
)
def test_incomparable_evaluations_are_refused(change, message):
    ev = evaluation([pt(0.5, 0.96, 280)], [pt(0.5, 0.95, 280)])
    change(ev)
    with pytest.raises(CompareError, match=message):
        compare_runs({"a": ev}, budgets=[0.3], reference=("p", plain()))


def test_bad_settings_are_refused():
    ev = evaluation([pt(0.5, 0.96, 280)], [pt(0.5, 0.95, 280)])
    with pytest.raises(CompareError, match="positive fractions"):
        compare_runs({"a": ev}, budgets=[0.0])
    with pytest.raises(CompareError, match="tolerance"):
        compare_runs({"a": ev}, tolerance=5)
    with pytest.raises(CompareError, match="no runs"):
        compare_runs({})
