"""BranchyNet's weighted joint loss and its per-exit weight schedules.

:func:`joint_loss` is ``sum_i w_i * CE(logits_i, y)`` over the exits (Teerapittayanon et al.,
"BranchyNet", ICPR 2016). Every schedule has one signature,
``schedule(num_exits, epoch, total_epochs) -> list[float]``, and its weights sum to 1 (as
torchtune's ``early_exit_loss`` schedules do).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from exitwise.registry import Registry

__all__ = ["LOSS_WEIGHTS", "loss_weights", "joint_loss"]

WeightSchedule = Callable[[int, int, int], list[float]]
LOSS_WEIGHTS: Registry[WeightSchedule] = Registry("loss-weight schedule")


def _normalise(raw: list[float]) -> list[float]:
    total = sum(raw)
    return [w / total for w in raw]


@LOSS_WEIGHTS.register("uniform")
def uniform(num_exits: int, epoch: int = 0, total_epochs: int = 1) -> list[float]:
    """Every exit weighs the same."""
    return _normalise([1.0] * num_exits)


@LOSS_WEIGHTS.register("linear")
def linear(num_exits: int, epoch: int = 0, total_epochs: int = 1) -> list[float]:
    """Exit ``i`` weighs ``i + 1``: deeper exits count more."""
    return _normalise([float(i + 1) for i in range(num_exits)])


@LOSS_WEIGHTS.register("sqrt")
def sqrt(num_exits: int, epoch: int = 0, total_epochs: int = 1) -> list[float]:
    """Exit ``i`` weighs ``sqrt(i + 1)``."""
    return _normalise([math.sqrt(i + 1) for i in range(num_exits)])


@LOSS_WEIGHTS.register("final")
def final(num_exits: int, epoch: int = 0, total_epochs: int = 1) -> list[float]:
    """Only the backbone's own classifier: plain backbone training."""
    return [0.0] * (num_exits - 1) + [1.0]


@LOSS_WEIGHTS.register("gradual")
def gradual(num_exits: int, epoch: int = 0, total_epochs: int = 1) -> list[float]:
    """Start uniform and shift weight to the deeper exits linearly over training."""
    t = min(max(epoch / max(total_epochs - 1, 1), 0.0), 1.0)
    u, lin = uniform(num_exits, epoch, total_epochs), linear(num_exits, epoch, total_epochs)
    return [(1 - t) * a + t * b for a, b in zip(u, lin, strict=True)]


def loss_weights(name: str, num_exits: int, epoch: int = 0, total_epochs: int = 1) -> list[float]:
    """Weights of schedule ``name`` (``LOSS_WEIGHTS.names()`` lists them)."""
    if num_exits < 1:
        raise ValueError(f"num_exits must be >= 1, got {num_exits}")
    return LOSS_WEIGHTS.get(name)(num_exits, epoch, total_epochs)


def joint_loss(
    exit_logits: Sequence[Tensor],
    target: Tensor,
    weights: Sequence[float],
    label_smoothing: float = 0.0,
) -> Tensor:
    """The weighted joint loss ``sum_i weights[i] * cross_entropy(exit_logits[i], target)``.

    Exits of weight 0 are left out (no gradient flows into them), e.g. the frozen backbone's own
    exit in two-stage training.

    Args:
        exit_logits: every exit's logits, shallow to deep.
        target: class indices.
        weights: one weight per exit (a schedule of :data:`LOSS_WEIGHTS`), not all zero.
        label_smoothing: cross-entropy label smoothing.

    Shape:
        ``exit_logits[i]`` ``(B, K)``, ``target`` ``(B,)``; output a scalar.
    """
    if len(weights) != len(exit_logits):
        raise ValueError(f"one weight per exit expected, got {len(weights)} for {len(exit_logits)}")
    terms = [
        w * F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        for w, logits in zip(weights, exit_logits, strict=True)
        if w > 0
    ]
    if not terms:
        raise ValueError(f"every exit's weight is 0 ({list(weights)}): nothing would learn")
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total
