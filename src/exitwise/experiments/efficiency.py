"""The efficiency study of seed 000 (Figs. 3 and 4): per-exit accuracy and cost, and accuracy
against the FLOPs actually spent, swept over the exit threshold, for several exit policies.

Thresholds are chosen on the validation split; the test split is only used to report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from exitwise.calibration.thresholds import max_probability_scores, search_per_exit
from exitwise.cost import CostAccount
from exitwise.data import ArrayDataset, DatasetSplits, iterate_batches
from exitwise.devices import module_device
from exitwise.experiments.calibration import calibrate_exits, policy_context
from exitwise.nets import ExitOutput, MultiExitNet
from exitwise.outputs import exit_accuracies
from exitwise.policies import POLICIES, ExitPolicy, LearnedConfidence, PolicyContext, PolicyFamily
from exitwise.results import (
    BackboneResult,
    ChosenPoint,
    CostSummary,
    DatasetInfo,
    EfficiencyResult,
    ExitResult,
    ModelInfo,
    OperatingPoint,
    OracleResult,
    PolicyResult,
)
from exitwise.routing import collect_outputs, oracle, pareto_front, sweep

PER_EXIT_TOLERANCES = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
"""Accuracy targets of the per-exit search: the final exit's validation accuracy minus these."""

PER_EXIT_BUDGETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
"""FLOPs budgets of the per-exit search, as fractions of the plain backbone's FLOPs."""

__all__ = ["choose_threshold", "efficiency_study"]


def choose_threshold(points: Sequence[OperatingPoint], target_accuracy: float) -> OperatingPoint:
    """The lowest-FLOPs point whose accuracy >= ``target_accuracy`` (else the most accurate)."""
    ok = [p for p in points if p.accuracy >= target_accuracy]
    if ok:
        return min(ok, key=lambda p: (p.mean_flops, -p.accuracy))
    return max(points, key=lambda p: (p.accuracy, -p.mean_flops))


def _outputs(
    model: MultiExitNet, data: ArrayDataset, batch_size: int, progress: Callable[[int], None] | None
) -> tuple[list[ExitOutput], torch.Tensor]:
    batches = iterate_batches(data, batch_size, device=module_device(model))  # uint8 travels
    outputs, labels = collect_outputs(model, batches, progress)
    assert labels is not None
    return outputs, labels


def _maker(family: PolicyFamily, ctx: PolicyContext) -> Callable[[float], ExitPolicy]:
    return lambda t: family.make(t, ctx)


def efficiency_study(
    model: MultiExitNet,
    data: DatasetSplits,
    policies: Sequence[str] = ("max_probability", "entropy"),
    tolerance: float = 0.005,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
    model_name: str = "",
    calibrate: bool = True,
    per_exit: bool = True,
) -> EfficiencyResult:
    """Evaluate ``model`` on ``data``: per-exit accuracy and cost, and every policy's sweep.

    For every policy the threshold is chosen on the validation split as the cheapest one whose
    validation accuracy is within ``tolerance`` of the final exit's; its test numbers are reported.
    Models with EENets exits also get ``learned_confidence`` (with its default threshold 0.5
    reported as ``default``) next to the max-probability and entropy rules. Costs are those of
    the data's input shape. It runs where the model is; the outputs are kept on the CPU.

    With ``calibrate`` (and a validation split) a temperature per exit is fitted by NLL on
    validation and every confidence-based rule uses it; the committee is weighted by the exits'
    validation accuracies. With ``per_exit``, max-probability with per-exit thresholds searched
    on validation is added twice: for accuracy targets (``max_probability_per_exit``, its
    ``threshold`` is the tolerance below the final exit) and for FLOPs budgets
    (``max_probability_per_exit_budget``, its ``threshold`` is the budget as a fraction of the
    backbone's FLOPs).
    """
    names = list(policies)
    for name in names:
        POLICIES.get(name)  # unknown names: KeyError with near matches
    if model.has_confidence and "learned_confidence" not in names:
        names.append("learned_confidence")  # EENets: its own rule next to the others
    names = [n for n in names if model.has_confidence or not POLICIES.get(n).needs_confidence]
    costs = model.costs_at(data.input_shape)
    bb = costs.backbone_flops
    test_out, test_y = _outputs(model, data.test, batch_size, progress)
    val_out, val_y = (
        _outputs(model, data.val, batch_size, progress) if len(data.val) else (None, None)
    )
    exit_acc = exit_accuracies(test_out, test_y)
    val_acc = exit_accuracies(val_out, val_y) if val_out is not None and val_y is not None else None
    blocks = [*model.exit_blocks, "final classifier"]
    name = model_name or str(model.config.get("backbone", "model"))
    orc = oracle(test_out, test_y, costs)
    result = EfficiencyResult(
        title=f"{name} on {data.name}",
        dataset=DatasetInfo(data.name, len(test_y), data.num_classes, "test"),
        model=ModelInfo(
            name,
            model.config.get("backbone"),
            model.num_exits,
            blocks,
            sum(p.numel() for p in model.parameters()),
        ),
        costs=CostSummary(**costs.to_dict()),
        exits=[
            ExitResult(
                i,
                blocks[i],
                exit_acc[i],
                costs.path_flops[i],
                costs.path_fractions[i],
                val_acc[i] if val_acc else None,
            )
            for i in range(model.num_exits)
        ],
        backbone=BackboneResult(exit_acc[-1], bb, val_acc[-1] if val_acc else None),
        oracle=OracleResult(
            orc.accuracy(test_y), orc.mean_flops, orc.mean_flops / bb, tuple(orc.exit_shares)
        ),
        policies={},
    )
    has_val = val_out is not None and val_y is not None
    if calibrate and has_val:
        assert val_out is not None and val_y is not None
        result.calibration = calibrate_exits(val_out, val_y, test_out, test_y)
    ctx = policy_context(result.calibration)
    names = [n for n in names if ctx.exit_weights is not None or n != "committee"]
    for pol_name in names:
        family = POLICIES.get(pol_name)
        make, grid = _maker(family, ctx), family.thresholds_for(model.num_exits)
        points = sweep(test_out, test_y, costs, make, grid)
        entry = PolicyResult(
            family.label,
            points,
            pareto_front(points),
            parameter="patience" if pol_name == "patience" else None,
        )
        if val_out is not None and val_y is not None and val_acc is not None:
            entry.val_sweep = sweep(val_out, val_y, costs, make, grid)
            pick = choose_threshold(entry.val_sweep, val_acc[-1] - tolerance)
            p = next(q for q in points if q.threshold == pick.threshold)  # same grid
            entry.chosen = ChosenPoint(
                p.threshold,
                p.accuracy,
                p.mean_flops,
                p.flops_fraction,
                p.exit_shares,
                val_accuracy=pick.accuracy,
                rule=f"cheapest threshold within {100 * tolerance:.1f} points of the final "
                "exit's accuracy on the validation split",
            )
        if pol_name == "learned_confidence":
            (entry.default,) = sweep(test_out, test_y, costs, LearnedConfidence, [0.5])
        result.policies[pol_name] = entry
    if per_exit and val_out is not None and val_y is not None and val_acc is not None:
        result.policies.update(
            _per_exit_rules(val_out, val_y, test_out, test_y, costs, ctx, val_acc[-1], tolerance)
        )
    return result


def _per_exit_rules(
    val_out: Sequence[ExitOutput],
    val_y: torch.Tensor,
    test_out: Sequence[ExitOutput],
    test_y: torch.Tensor,
    costs: CostAccount,
    ctx: PolicyContext,
    val_final: float,
    tolerance: float,
) -> dict[str, PolicyResult]:
    """Max-probability with per-exit thresholds searched on validation, measured on test."""
    scores, preds = max_probability_scores(val_out, ctx.temperature)
    bb = costs.backbone_flops
    goals: dict[str, tuple[str, dict[float, tuple[float | None, float | None]]]] = {
        "max_probability_per_exit": (
            "max softmax probability >= t_i, per-exit thresholds for the final exit's "
            "validation accuracy - t",
            {t: (val_final - t, None) for t in (*PER_EXIT_TOLERANCES, tolerance)},
        ),
        "max_probability_per_exit_budget": (
            "max softmax probability >= t_i, per-exit thresholds for mean FLOPs <= t x backbone",
            {b: (None, b * bb) for b in PER_EXIT_BUDGETS},
        ),
    }
    rules = {}
    for name, (label, searches) in goals.items():
        budget_rule = name.endswith("_budget")
        val_points, test_points = [], []
        for key, (target, budget) in sorted(searches.items()):
            fit = search_per_exit(
                scores, preds, val_y, costs.path_flops, target_accuracy=target, flops_budget=budget
            )
            val_points.append(
                OperatingPoint(
                    key,
                    fit.accuracy,
                    fit.mean_flops,
                    fit.mean_flops / bb,
                    fit.exit_shares,
                    fit.thresholds,
                )
            )
            make = _fixed(fit.policy(ctx.temperature))
            (point,) = sweep(test_out, test_y, costs, make, [key])
            test_points.append(dataclasses.replace(point, thresholds=fit.thresholds))
        entry = PolicyResult(
            label,
            test_points,
            pareto_front(test_points),
            val_sweep=val_points,
            parameter="FLOPs budget" if budget_rule else "tolerance below the final exit",
        )
        if name == "max_probability_per_exit":
            i = next(i for i, p in enumerate(val_points) if p.threshold == tolerance)
            p, v = test_points[i], val_points[i]
            entry.chosen = ChosenPoint(
                p.threshold, p.accuracy, p.mean_flops, p.flops_fraction, p.exit_shares,
                p.thresholds, val_accuracy=v.accuracy,
                rule=f"per-exit thresholds with the lowest validation FLOPs within "
                f"{100 * tolerance:.1f} points of the final exit's validation accuracy",
            )  # fmt: skip
        rules[name] = entry
    return rules


def _fixed(policy: ExitPolicy) -> Callable[[float], ExitPolicy]:
    return lambda _t: policy
