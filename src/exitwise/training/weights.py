"""Per-exit loss weights (BranchyNet's weighted joint loss).

Every schedule has one signature, ``schedule(num_exits, epoch, total_epochs) -> list[float]``, and
its weights sum to 1 (as torchtune's ``early_exit_loss`` schedules do).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from exitwise.registry import Registry

__all__ = ["LOSS_WEIGHTS", "loss_weights"]

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
    u, lin = uniform(num_exits), linear(num_exits)
    return [(1 - t) * a + t * b for a, b in zip(u, lin, strict=True)]


def loss_weights(name: str, num_exits: int, epoch: int = 0, total_epochs: int = 1) -> list[float]:
    """Weights of schedule ``name`` (``LOSS_WEIGHTS.names()`` lists them)."""
    if num_exits < 1:
        raise ValueError(f"num_exits must be >= 1, got {num_exits}")
    return LOSS_WEIGHTS.get(name)(num_exits, epoch, total_epochs)
