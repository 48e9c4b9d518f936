"""What exits emit and what rules decide (floor 1): :class:`ExitOutput` and :class:`ExitDecision`.

Networks (``exitwise.nets``) produce exit outputs; exit rules (``exitwise.policies``) read them
and answer with decisions. Both sides import these types from here, so a rule never needs to
import a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

__all__ = ["ExitOutput", "ExitDecision", "as_exit_output", "exit_accuracies", "take_rows"]


class ExitOutput(NamedTuple):
    """What one exit produced for a batch.

    Attributes:
        logits: ``(B, num_classes)``.
        confidence: ``(B,)`` learned exit confidence in [0, 1] (EENets), or ``None``.
    """

    logits: Tensor
    confidence: Tensor | None = None


def as_exit_output(out: Tensor | tuple[Tensor, Tensor]) -> ExitOutput:
    """Wrap what an exit head returns: logits, or ``(logits, confidence)`` for EENets exits.

    Shape:
        logits ``(B, K)``; confidence ``(B,)`` or ``(B, 1)`` (flattened to ``(B,)``).
    """
    if isinstance(out, tuple):
        logits, conf = out
        return ExitOutput(logits, conf.reshape(-1))
    return ExitOutput(out)


@dataclass(frozen=True)
class ExitDecision:
    """A policy's answer at one exit for a batch of ``B`` samples.

    Attributes:
        exit_mask: ``(B,)`` bool, True where the sample leaves here.
        prediction: ``(B,)`` int64 class predicted if it leaves.
        confidence: ``(B,)`` float, the policy's confidence score (higher = surer).
    """

    exit_mask: Tensor
    prediction: Tensor
    confidence: Tensor


def exit_accuracies(outputs: Sequence[ExitOutput], labels: Tensor) -> list[float]:
    """The accuracy of every exit's argmax on the same samples, shallow to deep."""
    return [float((o.logits.argmax(dim=1) == labels).double().mean()) for o in outputs]


def take_rows(out: ExitOutput, rows: Tensor) -> ExitOutput:
    """``out`` for the samples ``rows`` selects (a bool mask or indices): logits and confidence."""
    return ExitOutput(out.logits[rows], None if out.confidence is None else out.confidence[rows])
