"""The cost account: FLOPs of every stage and exit head, measured with ``torch.utils.flop_counter``.

Convention (stated once, used everywhere): FLOPs = 2 x multiply-accumulates (MACs), which is what
``torch.utils.flop_counter.FlopCounterMode`` counts for convolutions and matrix products.
Element-wise ops (activations, batch norm in eval, additions, softmax) are not counted.
MACs are reported as FLOPs / 2 and labelled as such.

The cost of leaving at exit ``i`` = stages ``0..i`` + every exit head ``0..i`` evaluated on the way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["CostAccount", "count_flops", "count_flops_and_output"]

T = TypeVar("T")


def count_flops_and_output(fn: Callable[[], T]) -> tuple[int, T]:
    """FLOPs counted by ``FlopCounterMode`` while ``fn()`` runs, and what ``fn()`` returned.

    No gradients are recorded, and the count is private: the dispatch modes the caller has open
    (e.g. its own ``FlopCounterMode`` around a routed run that measures a new input shape
    lazily) are switched off meanwhile, so they do not count these FLOPs.
    """
    with _disable_current_modes(), torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn()
    return int(counter.get_total_flops()), out


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs counted by ``FlopCounterMode`` while ``fn()`` runs, privately (as
    :func:`count_flops_and_output`)."""
    return count_flops_and_output(fn)[0]


@dataclass(frozen=True)
class CostAccount:
    """Measured per-sample FLOPs of a multi-exit network at one input size.

    Attributes:
        stage_flops: FLOPs of each stage (the blocks between two exits), shallow to deep.
        exit_flops: FLOPs of each exit head; the last is the backbone's own classifier.
        input_shape: ``(C, H, W)`` the costs were measured at, batch size 1.
    """

    stage_flops: tuple[int, ...]
    exit_flops: tuple[int, ...]
    input_shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.stage_flops) != len(self.exit_flops):
            raise ValueError(
                f"one stage per exit expected, got {len(self.stage_flops)} stages "
                f"and {len(self.exit_flops)} exits"
            )

    @property
    def num_exits(self) -> int:
        return len(self.exit_flops)

    @cached_property
    def path_flops(self) -> tuple[int, ...]:
        """FLOPs spent by a sample that leaves at exit i: stages 0..i + heads 0..i."""
        return tuple(
            accumulate(s + e for s, e in zip(self.stage_flops, self.exit_flops, strict=True))
        )

    @property
    def backbone_flops(self) -> int:
        """FLOPs of the plain backbone: every stage + its own classifier, no side exits."""
        return sum(self.stage_flops) + self.exit_flops[-1]

    @property
    def path_fractions(self) -> tuple[float, ...]:
        """``path_flops`` as fractions of ``backbone_flops``."""
        return tuple(p / self.backbone_flops for p in self.path_flops)

    def path_flops_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``path_flops`` as an int64 tensor, built once per device (routing reads it per call)."""
        key = str(torch.device(device)) if device is not None else "cpu"
        if key not in self._tensors:
            self._tensors[key] = torch.tensor(self.path_flops, dtype=torch.int64, device=device)
        return self._tensors[key]

    @cached_property
    def _tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def rows(self) -> list[dict[str, float | int]]:
        """One row per exit: stage, head and path FLOPs and MACs, and the path fraction."""
        return [
            {
                "exit": i,
                "stage_flops": s,
                "head_flops": e,
                "path_flops": p,
                "path_macs": p // 2,
                "path_fraction": f,
            }
            for i, (s, e, p, f) in enumerate(
                zip(
                    self.stage_flops,
                    self.exit_flops,
                    self.path_flops,
                    self.path_fractions,
                    strict=True,
                )
            )
        ]

    def to_dict(self) -> dict:
        return {
            "convention": "FLOPs = 2 x MACs, counted by torch.utils.flop_counter at batch size 1",
            "input_shape": list(self.input_shape),
            "stage_flops": list(self.stage_flops),
            "exit_flops": list(self.exit_flops),
            "path_flops": list(self.path_flops),
            "path_macs": [p // 2 for p in self.path_flops],
            "backbone_flops": self.backbone_flops,
            "backbone_macs": self.backbone_flops // 2,
        }
