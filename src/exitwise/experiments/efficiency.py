"""The efficiency study of seed 000 (Figs. 3 and 4): per-exit accuracy and cost, and accuracy
against the FLOPs actually spent, swept over the exit threshold, for several exit policies.

Thresholds are chosen on the validation split; the test split is only used to report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from exitwise.data import ArrayDataset, DatasetSplits
from exitwise.nets import ExitOutput, MultiExitNet
from exitwise.policies import Entropy, ExitPolicy, LearnedConfidence, MaxProbability
from exitwise.routing import (
    OperatingPoint,
    collect_outputs,
    default_thresholds,
    oracle,
    pareto_front,
    simulate,
    sweep,
)
from exitwise.training.trainer import iterate_batches

__all__ = ["POLICY_FAMILIES", "choose_threshold", "efficiency_study"]

# name -> (label, policy factory, threshold grid)
POLICY_FAMILIES: dict[str, tuple[str, Callable[[float], ExitPolicy], list[float]]] = {
    "max_probability": ("max softmax probability >= t", MaxProbability, default_thresholds()),
    "entropy": (
        "normalised entropy <= t",
        lambda t: Entropy(t, normalized=True),
        [0.0, 1e-4, 1e-3, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0],
    ),
    "learned_confidence": (
        "learned exit confidence >= t (EENets; t = 0.5 by default)",
        LearnedConfidence,
        [0.0, 0.005, 0.01, 0.02, 0.03]
        + [i / 20 for i in range(1, 21)]
        + [0.98, 0.99, 0.995, 0.999, 0.9999, 1.0, 1.01],
    ),
}


def choose_threshold(points: Sequence[OperatingPoint], target_accuracy: float) -> OperatingPoint:
    """The lowest-FLOPs point whose accuracy >= ``target_accuracy`` (else the most accurate)."""
    ok = [p for p in points if p.accuracy >= target_accuracy]
    if ok:
        return min(ok, key=lambda p: (p.mean_flops, -p.accuracy))
    return max(points, key=lambda p: (p.accuracy, -p.mean_flops))


def _outputs(
    model: MultiExitNet, data: ArrayDataset, batch_size: int, progress: Callable[[int], None] | None
) -> tuple[list[ExitOutput], torch.Tensor]:
    outputs, labels = collect_outputs(model, iterate_batches(data, batch_size), progress)
    assert labels is not None
    return outputs, labels


def efficiency_study(
    model: MultiExitNet,
    data: DatasetSplits,
    policies: Sequence[str] = ("max_probability", "entropy"),
    tolerance: float = 0.005,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
    model_name: str = "",
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` and return the evaluation dictionary of the report.

    For every policy the threshold is chosen on the validation split as the cheapest one whose
    validation accuracy is within ``tolerance`` of the final exit's; its test numbers are reported.
    Models with EENets exits also get ``learned_confidence`` (with its default threshold 0.5
    reported as ``default``) next to the max-probability and entropy rules.
    """
    policies = list(policies)
    if model.has_confidence and "learned_confidence" not in policies:
        policies.append("learned_confidence")  # EENets: its own rule next to the others
    if not model.has_confidence:
        policies = [p for p in policies if p != "learned_confidence"]
    unknown = [p for p in policies if p not in POLICY_FAMILIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; available: {sorted(POLICY_FAMILIES)}")
    costs = model.costs
    test_out, test_y = _outputs(model, data.test, batch_size, progress)
    val_out, val_y = (
        _outputs(model, data.val, batch_size, progress) if len(data.val) else (None, None)
    )
    exit_acc = [float((o.logits.argmax(1) == test_y).double().mean()) for o in test_out]
    val_acc = (
        [float((o.logits.argmax(1) == val_y).double().mean()) for o in val_out]
        if val_out is not None
        else None
    )
    blocks = [*model.exit_blocks, "final classifier"]
    result: dict[str, Any] = {
        "title": f"{model_name or model.config.get('backbone', 'model')} on {data.name}",
        "dataset": {
            "name": data.name,
            "split": "test",
            "num_samples": len(test_y),
            "num_classes": data.num_classes,
        },
        "model": {
            "name": model_name or model.config.get("backbone"),
            "backbone": model.config.get("backbone"),
            "num_exits": model.num_exits,
            "exit_blocks": blocks,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        },
        "costs": costs.to_dict(),
        "exits": [
            {
                "exit": i,
                "block": blocks[i],
                "accuracy": exit_acc[i],
                "path_flops": costs.path_flops[i],
                "path_fraction": costs.path_fractions[i],
                "val_accuracy": val_acc[i] if val_acc else None,
            }
            for i in range(model.num_exits)
        ],
        "backbone": {
            "accuracy": exit_acc[-1],
            "val_accuracy": val_acc[-1] if val_acc else None,
            "flops": costs.backbone_flops,
            "label": "final exit only (plain backbone cost)",
        },
        "policies": {},
    }
    orc = oracle(test_out, test_y, costs)
    result["oracle"] = {
        "accuracy": orc.accuracy(test_y),
        "mean_flops": orc.mean_flops,
        "flops_fraction": orc.mean_flops / costs.backbone_flops,
        "exit_shares": orc.exit_shares,
    }
    for name in policies:
        label, make, grid = POLICY_FAMILIES[name]
        points = sweep(test_out, test_y, costs, make, grid)
        entry: dict[str, Any] = {
            "label": label,
            "sweep": [p.to_dict() for p in points],
            "pareto": [p.to_dict() for p in pareto_front(points)],
            "chosen": None,
        }
        if val_out is not None and val_acc is not None:
            val_points = sweep(val_out, val_y, costs, make, grid)
            entry["val_sweep"] = [p.to_dict() for p in val_points]
            pick = choose_threshold(val_points, val_acc[-1] - tolerance)
            test_res = simulate(test_out, make(pick.threshold), costs)
            entry["chosen"] = {
                "threshold": pick.threshold,
                "accuracy": test_res.accuracy(test_y),
                "mean_flops": test_res.mean_flops,
                "mean_macs": test_res.mean_flops / 2,
                "flops_fraction": test_res.mean_flops / costs.backbone_flops,
                "exit_shares": test_res.exit_shares,
                "val_accuracy": pick.accuracy,
                "rule": f"cheapest threshold within {100 * tolerance:.1f} points of the final "
                "exit's accuracy on the validation split",
            }
        if name == "learned_confidence":
            res = simulate(test_out, LearnedConfidence(0.5), costs)
            entry["default"] = {
                "threshold": 0.5,
                "accuracy": res.accuracy(test_y),
                "mean_flops": res.mean_flops,
                "flops_fraction": res.mean_flops / costs.backbone_flops,
                "exit_shares": res.exit_shares,
            }
        result["policies"][name] = entry
    return result
