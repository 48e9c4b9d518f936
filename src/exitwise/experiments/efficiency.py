"""The efficiency study of seed 000 (Figs. 3 and 4): per-exit accuracy and cost, and accuracy
against the FLOPs actually spent, swept over the exit threshold, for several exit policies.

Thresholds are chosen on the validation split; the test split is only used to report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from exitwise.data import ArrayDataset, DatasetSplits, iterate_batches
from exitwise.devices import module_device
from exitwise.nets import ExitOutput, MultiExitNet
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


def _accuracies(outputs: Sequence[ExitOutput], labels: torch.Tensor) -> list[float]:
    return [float((o.logits.argmax(1) == labels).double().mean()) for o in outputs]


def efficiency_study(
    model: MultiExitNet,
    data: DatasetSplits,
    policies: Sequence[str] = ("max_probability", "entropy"),
    tolerance: float = 0.005,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
    model_name: str = "",
) -> EfficiencyResult:
    """Evaluate ``model`` on ``data``: per-exit accuracy and cost, and every policy's sweep.

    For every policy the threshold is chosen on the validation split as the cheapest one whose
    validation accuracy is within ``tolerance`` of the final exit's; its test numbers are reported.
    Models with EENets exits also get ``learned_confidence`` (with its default threshold 0.5
    reported as ``default``) next to the max-probability and entropy rules. Costs are those of
    the data's input shape. It runs where the model is; the outputs are kept on the CPU.
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
    exit_acc = _accuracies(test_out, test_y)
    val_acc = _accuracies(val_out, val_y) if val_out is not None and val_y is not None else None
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
    ctx = PolicyContext()
    for pol_name in names:
        family = POLICIES.get(pol_name)
        make, grid = _maker(family, ctx), family.thresholds_for(model.num_exits)
        points = sweep(test_out, test_y, costs, make, grid)
        entry = PolicyResult(family.label, points, pareto_front(points))
        if val_out is not None and val_y is not None and val_acc is not None:
            entry.val_sweep = sweep(val_out, val_y, costs, make, grid)
            pick = choose_threshold(entry.val_sweep, val_acc[-1] - tolerance)
            (p,) = sweep(test_out, test_y, costs, make, [pick.threshold])
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
    return result
