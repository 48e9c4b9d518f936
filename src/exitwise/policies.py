"""Exit policies: pure functions of the exit outputs seen so far.

A policy answers, at exit ``i``, for every sample still running: does it leave here, with which
prediction and which confidence? It sees the outputs of exits ``0..i`` of those samples only, so the
same object drives the offline simulation (outputs of a whole dataset, computed once) and live
routed inference (outputs of the samples still in the batch), and both make the same decisions.

The last exit is not asked: every sample that reaches it leaves there (see ``final_decision``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from exitwise.outputs import ExitDecision, ExitOutput
from exitwise.registry import Registry

__all__ = [
    "ExitDecision",
    "ExitPolicy",
    "MaxProbability",
    "Entropy",
    "LearnedConfidence",
    "Capped",
    "final_decision",
    "PolicyFamily",
    "POLICIES",
    "default_thresholds",
]


def _max_softmax(logits: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    probs = torch.softmax(logits / temperature if temperature != 1.0 else logits, dim=1)
    conf, pred = probs.max(dim=1)
    return conf, pred


def final_decision(output: ExitOutput) -> ExitDecision:
    """The decision at the last exit: everyone leaves, predicting the argmax."""
    conf, pred = _max_softmax(output.logits)
    return ExitDecision(torch.ones_like(pred, dtype=torch.bool), pred, conf)


class ExitPolicy(ABC):
    """Base class: subclasses implement :meth:`decide` for side exits.

    ``decide`` must treat each sample (row) independently, so that its answer for a sample does not
    depend on which other samples are in the batch.
    """

    @abstractmethod
    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        """Decide at side exit ``exit_idx`` given ``outputs[0..exit_idx]`` of the same samples."""

    def describe(self) -> str:
        return repr(self)


def _per_exit(value: float | Sequence[float], name: str) -> tuple[float, ...] | float:
    if isinstance(value, (int, float)):
        return float(value)
    vals = tuple(float(v) for v in value)
    if not vals:
        raise ValueError(f"{name} needs at least one value")
    return vals


def _threshold_at(thresholds: tuple[float, ...] | float, exit_idx: int, name: str) -> float:
    if isinstance(thresholds, float):
        return thresholds
    if exit_idx >= len(thresholds):
        raise ValueError(
            f"{name} has {len(thresholds)} per-exit values but exit {exit_idx} was asked; "
            "give one value per side exit"
        )
    return thresholds[exit_idx]


class MaxProbability(ExitPolicy):
    """Leave at the first exit whose maximum softmax probability >= ``threshold``.

    The rule of seed 002 (Pacheco et al.) and most early-exit work. ``threshold`` is one value for
    every side exit or one per side exit. ``temperature`` (one or per exit) rescales the logits
    first (temperature scaling, Guo et al. 2017). A threshold above 1 means "never leave early".
    """

    def __init__(
        self,
        threshold: float | Sequence[float],
        temperature: float | Sequence[float] = 1.0,
    ) -> None:
        self.threshold = _per_exit(threshold, "threshold")
        self.temperature = _per_exit(temperature, "temperature")
        for t in (self.temperature,) if isinstance(self.temperature, float) else self.temperature:
            if not t > 0:
                raise ValueError(f"temperatures must be > 0, got {self.temperature}")
        for t in (self.threshold,) if isinstance(self.threshold, float) else self.threshold:
            if math.isnan(t):
                raise ValueError("threshold is NaN")

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        conf, pred = _max_softmax(
            outputs[exit_idx].logits, _threshold_at(self.temperature, exit_idx, "temperature")
        )
        return ExitDecision(
            conf >= _threshold_at(self.threshold, exit_idx, "threshold"), pred, conf
        )

    def __repr__(self) -> str:
        return f"MaxProbability(threshold={self.threshold}, temperature={self.temperature})"


class Entropy(ExitPolicy):
    """Leave where the entropy of the softmax (in nats) <= ``threshold`` (BranchyNet's rule).

    With ``normalized=True`` the entropy is divided by ``log(num_classes)`` so thresholds lie in
    [0, 1] for any number of classes. The confidence reported is ``1 - normalised entropy``.
    """

    def __init__(self, threshold: float | Sequence[float], normalized: bool = False) -> None:
        self.threshold = _per_exit(threshold, "threshold")
        self.normalized = normalized

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        logits = outputs[exit_idx].logits
        logp = torch.log_softmax(logits, dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1)
        norm = math.log(logits.shape[1]) if logits.shape[1] > 1 else 1.0
        score = entropy / norm if self.normalized else entropy
        pred = logits.argmax(dim=1)
        mask = score <= _threshold_at(self.threshold, exit_idx, "threshold")
        return ExitDecision(mask, pred, 1.0 - entropy / norm)

    def __repr__(self) -> str:
        return f"Entropy(threshold={self.threshold}, normalized={self.normalized})"


class LearnedConfidence(ExitPolicy):
    """Leave at the first exit whose learned confidence >= ``threshold`` (EENets; default 0.5).

    Needs exits that output a confidence (``exit_head="eenets"``).
    """

    def __init__(self, threshold: float | Sequence[float] = 0.5) -> None:
        self.threshold = _per_exit(threshold, "threshold")

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        out = outputs[exit_idx]
        if out.confidence is None:
            raise ValueError(
                f"exit {exit_idx} has no learned confidence; LearnedConfidence needs EENets exits "
                "(exit_head='eenets'); use MaxProbability or Entropy for other exits"
            )
        conf = out.confidence.to(out.logits.dtype)
        mask = conf >= _threshold_at(self.threshold, exit_idx, "threshold")
        return ExitDecision(mask, out.logits.argmax(dim=1), conf)

    def __repr__(self) -> str:
        return f"LearnedConfidence(threshold={self.threshold})"


class Capped(ExitPolicy):
    """Wrap a policy so that no sample runs past exit ``max_exit``: a defence that caps the
    worst-case cost (e.g. under a slowdown attack) at that exit's path FLOPs.

    At ``max_exit`` every sample still running leaves with the inner policy's prediction.
    """

    def __init__(self, policy: ExitPolicy, max_exit: int) -> None:
        if max_exit < 0:
            raise ValueError(f"max_exit must be >= 0, got {max_exit}")
        self.policy, self.max_exit = policy, max_exit

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        dec = self.policy.decide(exit_idx, outputs)
        if exit_idx >= self.max_exit:
            return ExitDecision(torch.ones_like(dec.exit_mask), dec.prediction, dec.confidence)
        return dec

    def __repr__(self) -> str:
        return f"Capped({self.policy!r}, max_exit={self.max_exit})"


# ------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class PolicyFamily:
    """An exit rule with one free threshold: how to build it and which thresholds to sweep.

    Attributes:
        name: the registry name (``eval.policies`` in a run config).
        label: what the threshold means, for reports.
        make: ``make(t)`` builds the rule at threshold ``t``.
        thresholds: the grid swept by the efficiency study.
        needs_confidence: True when the rule reads learned exit confidences (EENets exits).
    """

    name: str
    label: str
    make: Callable[[float], ExitPolicy]
    thresholds: tuple[float, ...]
    needs_confidence: bool = False


def default_thresholds() -> list[float]:
    """A grid for max-probability thresholds: dense near 1, where the decisions change most."""
    grid = [i / 20 for i in range(0, 20)] + [0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
    return grid + [0.9995, 0.9999, 0.99999, 1.0, 1.01]


def _entropy_normalized(t: float) -> Entropy:
    return Entropy(t, normalized=True)


POLICIES: Registry[PolicyFamily] = Registry("exit policy")
"""The exit rules a run can sweep, by name (``exitwise info`` lists them)."""

for _family in (
    PolicyFamily(
        "max_probability",
        "max softmax probability >= t",
        MaxProbability,
        tuple(default_thresholds()),
    ),
    PolicyFamily(
        "entropy",
        "normalised entropy <= t",
        _entropy_normalized,
        (0.0, 1e-4, 1e-3, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0),
    ),
    PolicyFamily(
        "learned_confidence",
        "learned exit confidence >= t (EENets; t = 0.5 by default)",
        LearnedConfidence,
        (0.0, 0.005, 0.01, 0.02, 0.03)
        + tuple(i / 20 for i in range(1, 21))
        + (0.98, 0.99, 0.995, 0.999, 0.9999, 1.0, 1.01),
        needs_confidence=True,
    ),
):
    POLICIES.register(_family.name, _family)
