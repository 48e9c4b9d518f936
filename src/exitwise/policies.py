"""Exit policies: pure functions of the exit outputs seen so far.

A policy answers, at exit ``i``, for every sample still running: does it leave here, with which
prediction and which confidence? It sees the outputs of exits ``0..i`` of those samples only, so the
same object drives the offline simulation (outputs of a whole dataset, computed once) and live
routed inference (outputs of the samples still in the batch), and both make the same decisions.

Side exits are asked with :meth:`ExitPolicy.decide`; at the last exit every sample that reaches it
leaves, with the prediction and confidence of :meth:`ExitPolicy.final` (by default the argmax and
the max softmax at the rule's temperature for that exit; :func:`final_decision` is the plain
helper). A rule that computes more than element-wise operations to decide (the committee and the
mean ensemble combine probability vectors with a matrix product) reports those FLOPs with
:meth:`ExitPolicy.decision_flops`, and routing adds them to every sample's cost.
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
    "Committee",
    "MeanEnsemble",
    "Patience",
    "Capped",
    "Offloaded",
    "final_decision",
    "PolicyContext",
    "PolicyFamily",
    "POLICIES",
    "default_thresholds",
]

PerExit = float | tuple[float, ...]
"""One value for every exit, or one per exit (a tuple)."""


def _probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    return torch.softmax(logits / temperature if temperature != 1.0 else logits, dim=1)


def _max_softmax(logits: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    conf, pred = _probs(logits, temperature).max(dim=1)
    return conf, pred


def final_decision(output: ExitOutput, temperature: float = 1.0) -> ExitDecision:
    """The plain decision at the last exit: everyone leaves, predicting the argmax, with the max
    softmax of ``logits / temperature`` as confidence."""
    conf, pred = _max_softmax(output.logits, temperature)
    return ExitDecision(torch.ones_like(pred, dtype=torch.bool), pred, conf)


# ------------------------------------------------------------------------------ value checking


def _per_exit(value: float | Sequence[float], name: str) -> PerExit:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or one number per exit, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(
            f"{name} must be a number or a sequence of numbers (one per exit), "
            f"got {type(value).__name__}"
        )
    vals = tuple(float(v) for v in value)
    if not vals:
        raise ValueError(f"{name} needs at least one value")
    return vals


def _values(value: PerExit) -> tuple[float, ...]:
    return (value,) if isinstance(value, float) else value


def _thresholds(value: float | Sequence[float], name: str) -> PerExit:
    """Thresholds of a rule: not NaN, >= 0 (a probability threshold above 1 = never leave)."""
    out = _per_exit(value, name)
    for v in _values(out):
        if math.isnan(v):
            raise ValueError(f"{name} is NaN; give a number >= 0 (one, or one per side exit)")
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    return out


def _temperatures(value: float | Sequence[float]) -> PerExit:
    out = _per_exit(value, "temperature")
    for t in _values(out):
        if not (t > 0 and math.isfinite(t)):
            raise ValueError(f"temperatures must be > 0 and finite, got {value}")
    return out


def _threshold_at(
    values: PerExit, exit_idx: int, name: str, fix: str = "give one value per side exit"
) -> float:
    """Exit ``exit_idx``'s value of ``values`` (one for every exit, or one per exit)."""
    if isinstance(values, float):
        return values
    if exit_idx >= len(values):
        raise ValueError(
            f"{name} has {len(values)} per-exit values but exit {exit_idx} was asked; {fix}"
        )
    return values[exit_idx]


def _check_length(value: PerExit, expected: int, name: str, what: str) -> None:
    if isinstance(value, tuple) and len(value) != expected:
        raise ValueError(
            f"{name} has {len(value)} per-exit values but the network has {expected} {what}; "
            f"give one value, or {expected} (one per {what.rstrip('s')})"
        )


# ------------------------------------------------------------------------------------ the rules


class ExitPolicy(ABC):
    """Base class: subclasses implement :meth:`decide` for side exits.

    ``decide`` must treat each sample (row) independently, so that its answer for a sample does not
    depend on which other samples are in the batch. The other methods have defaults that fit a
    rule with no temperature and no decision overhead.
    """

    @abstractmethod
    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        """Decide at side exit ``exit_idx`` given ``outputs[0..exit_idx]`` of the same samples."""

    def final(self, outputs: Sequence[ExitOutput]) -> ExitDecision:
        """The decision at the last exit (``outputs[-1]``): every sample leaves.

        Default: the argmax, with the max softmax at :meth:`temperature_at` of the last exit as
        confidence.
        """
        return final_decision(outputs[-1], self.temperature_at(len(outputs) - 1))

    def temperature_at(self, exit_idx: int) -> float:
        """The temperature this rule divides exit ``exit_idx``'s logits by (1.0: none)."""
        return 1.0

    def decision_flops(self, exit_idx: int, num_classes: int) -> int:
        """FLOPs per sample that :meth:`decide` spends at side exit ``exit_idx`` beyond
        element-wise operations (counted as ``FlopCounterMode`` does; default 0)."""
        return 0

    def check_exits(self, num_exits: int) -> None:
        """Raise ``ValueError`` if per-exit values do not fit a network of ``num_exits`` exits.

        Routing and simulation call it before they run anything. Default: nothing to check.
        """
        return None

    def describe(self) -> str:
        return repr(self)


class _Tempered(ExitPolicy):
    """A rule whose logits are divided by ``temperature``: one, or one per exit (the last
    included)."""

    temperature: PerExit

    def temperature_at(self, exit_idx: int) -> float:
        return _threshold_at(
            self.temperature,
            exit_idx,
            "temperature",
            "give one temperature per exit, the last exit included",
        )

    def check_exits(self, num_exits: int) -> None:
        _check_length(self.temperature, num_exits, "temperature", "exits")


class _Thresholded(_Tempered):
    """A tempered rule with a threshold (named ``_threshold_name``): one, or one per side
    exit."""

    threshold: PerExit
    _threshold_name = "threshold"

    def check_exits(self, num_exits: int) -> None:
        _check_length(self.threshold, num_exits - 1, self._threshold_name, "side exits")
        super().check_exits(num_exits)


class MaxProbability(_Thresholded):
    """Leave at the first exit whose maximum softmax probability >= ``threshold``.

    The rule of seed 002 (Pacheco et al.) and most early-exit work. ``threshold`` is one value for
    every side exit or one per side exit. ``temperature`` (one, or one per exit with the last
    included) rescales the logits first, at the last exit too (temperature scaling, Guo et al.
    2017). A threshold above 1 means "never leave early".
    """

    def __init__(
        self,
        threshold: float | Sequence[float],
        temperature: float | Sequence[float] = 1.0,
    ) -> None:
        self.threshold = _thresholds(threshold, "threshold")
        self.temperature = _temperatures(temperature)

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        conf, pred = _max_softmax(outputs[exit_idx].logits, self.temperature_at(exit_idx))
        return ExitDecision(
            conf >= _threshold_at(self.threshold, exit_idx, "threshold"), pred, conf
        )

    def __repr__(self) -> str:
        return f"MaxProbability(threshold={self.threshold}, temperature={self.temperature})"


class Entropy(_Thresholded):
    """Leave where the entropy of the softmax (in nats) <= ``threshold`` (BranchyNet's rule).

    With ``normalized=True`` the entropy is divided by ``log(num_classes)`` so thresholds lie in
    [0, 1] for any number of classes. ``temperature`` (one, or one per exit) rescales the logits
    first. The confidence reported is ``1 - normalised entropy``, at the last exit too.
    """

    def __init__(
        self,
        threshold: float | Sequence[float],
        normalized: bool = False,
        temperature: float | Sequence[float] = 1.0,
    ) -> None:
        self.threshold = _thresholds(threshold, "threshold")
        self.normalized = normalized
        self.temperature = _temperatures(temperature)

    def _score(self, exit_idx: int, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(score compared with the threshold, 1 - normalised entropy)``."""
        logp = torch.log_softmax(logits / self.temperature_at(exit_idx), dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1)
        norm = math.log(logits.shape[1]) if logits.shape[1] > 1 else 1.0
        return (entropy / norm if self.normalized else entropy), 1.0 - entropy / norm

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        logits = outputs[exit_idx].logits
        score, conf = self._score(exit_idx, logits)
        mask = score <= _threshold_at(self.threshold, exit_idx, "threshold")
        return ExitDecision(mask, logits.argmax(dim=1), conf)

    def final(self, outputs: Sequence[ExitOutput]) -> ExitDecision:
        logits = outputs[-1].logits
        _, conf = self._score(len(outputs) - 1, logits)
        pred = logits.argmax(dim=1)
        return ExitDecision(torch.ones_like(pred, dtype=torch.bool), pred, conf)

    def __repr__(self) -> str:
        return (
            f"Entropy(threshold={self.threshold}, normalized={self.normalized}, "
            f"temperature={self.temperature})"
        )


class LearnedConfidence(ExitPolicy):
    """Leave at the first exit whose learned confidence >= ``threshold`` (EENets; default 0.5).

    Needs exits that output a confidence (``exit_head="eenets"``). At the last exit the confidence
    reported is the max softmax (the default :meth:`ExitPolicy.final`).
    """

    def __init__(self, threshold: float | Sequence[float] = 0.5) -> None:
        self.threshold = _thresholds(threshold, "threshold")

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

    def check_exits(self, num_exits: int) -> None:
        _check_length(self.threshold, num_exits - 1, "threshold", "side exits")

    def __repr__(self) -> str:
        return f"LearnedConfidence(threshold={self.threshold})"


class _Ensemble(_Thresholded):
    """Shared machinery of :class:`Committee` and :class:`MeanEnsemble`: at side exit ``i`` the
    (temperature-scaled) probability vectors of exits ``0..i`` are combined with weights
    ``w[0..i]`` that sum to 1, as one matrix product; the sample leaves when the combination's top
    probability >= the threshold."""

    def __init__(self) -> None:
        self._weight_cache: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}

    @abstractmethod
    def _weights(self, k: int) -> tuple[float, ...]:
        """The combination weights of exits ``0..k-1``, summing to 1."""

    def _weight_tensor(self, k: int, like: Tensor) -> Tensor:
        key = (k, like.dtype, like.device)
        if key not in self._weight_cache:
            w = torch.tensor(self._weights(k), dtype=like.dtype, device=like.device)
            self._weight_cache[key] = w.view(k, 1)
        return self._weight_cache[key]

    def combine(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> Tensor:
        """The combined probability vectors at exit ``exit_idx``.

        Shape:
            ``(B, num_classes)``; exit 0 is exit 0's own probabilities (nothing to combine).
        """
        k = exit_idx + 1
        probs = [_probs(outputs[j].logits, self.temperature_at(j)) for j in range(k)]
        if k == 1:
            return probs[0]
        stacked = torch.stack(probs, dim=2)  # (B, C, k)
        b, c = stacked.shape[0], stacked.shape[1]
        # A real matrix product, so that FlopCounterMode counts it: 2 * B * C * k FLOPs.
        return torch.mm(stacked.reshape(b * c, k), self._weight_tensor(k, stacked)).view(b, c)

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        conf, pred = self.combine(exit_idx, outputs).max(dim=1)
        thr = _threshold_at(self.threshold, exit_idx, self._threshold_name)
        return ExitDecision(conf >= thr, pred, conf)

    def decision_flops(self, exit_idx: int, num_classes: int) -> int:
        return 0 if exit_idx == 0 else 2 * num_classes * (exit_idx + 1)


class Committee(_Ensemble):
    """Seed 002's committee of exits (Pacheco et al., eq. 1): at side exit ``i`` the probability
    vectors of exits ``0..i`` are averaged with weights ``weights[0..i]`` (each exit's accuracy on
    the VALIDATION split) normalised to sum to 1; the sample leaves when the committee's top
    probability >= ``alpha``. Prediction: the committee's argmax; confidence: its top probability.

    The last exit decides alone (the default :meth:`ExitPolicy.final`), as in the seed, where the
    committee holds the edge exits only.

    Args:
        alpha: one threshold for every side exit, or one per side exit (above 1: never leave).
        weights: one per exit, >= 0, ``weights[0] > 0``; the last exit's weight is never used, so
            one per side exit is enough.
        temperature: one, or one per exit (the last included); each exit's logits are divided by
            its temperature before the softmax.
    """

    _threshold_name = "alpha"

    def __init__(
        self,
        alpha: float | Sequence[float],
        weights: Sequence[float],
        temperature: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        self.threshold = _thresholds(alpha, "alpha")
        w = _per_exit(weights, "weights")
        if isinstance(w, float):
            raise TypeError("weights must be one number per exit (validation accuracies)")
        for v in w:
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"weights must be finite and >= 0, got {w}")
        if w[0] == 0:
            raise ValueError(
                f"weights[0] must be > 0 (the committee at exit 0 is exit 0 alone), got {w}"
            )
        self.weights: tuple[float, ...] = w
        self.temperature = _temperatures(temperature)

    @property
    def alpha(self) -> PerExit:
        return self.threshold

    def _weights(self, k: int) -> tuple[float, ...]:
        if k > len(self.weights):
            raise ValueError(
                f"weights has {len(self.weights)} values but exit {k - 1} was asked; "
                "give one weight per exit (validation accuracies)"
            )
        total = math.fsum(self.weights[:k])
        return tuple(v / total for v in self.weights[:k])

    def check_exits(self, num_exits: int) -> None:
        super().check_exits(num_exits)
        if len(self.weights) not in (num_exits - 1, num_exits):
            raise ValueError(
                f"weights has {len(self.weights)} values but the network has {num_exits} exits; "
                f"give one per exit ({num_exits}) or one per side exit ({num_exits - 1})"
            )

    def __repr__(self) -> str:
        return (
            f"Committee(alpha={self.threshold}, weights={self.weights}, "
            f"temperature={self.temperature})"
        )


class MeanEnsemble(_Ensemble):
    """Early-exit ensemble (Qendro et al. 2021): at side exit ``i`` the plain mean of the
    probability vectors of exits ``0..i``; leave when its top probability >= ``threshold``.

    Prediction: the mean's argmax; confidence: its top probability. The last exit decides alone
    (the default :meth:`ExitPolicy.final`). ``threshold`` is one value or one per side exit;
    ``temperature`` one, or one per exit (the last included).
    """

    def __init__(
        self,
        threshold: float | Sequence[float],
        temperature: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        self.threshold = _thresholds(threshold, "threshold")
        self.temperature = _temperatures(temperature)

    def _weights(self, k: int) -> tuple[float, ...]:
        return (1.0 / k,) * k

    def __repr__(self) -> str:
        return f"MeanEnsemble(threshold={self.threshold}, temperature={self.temperature})"


class Patience(_Tempered):
    """Patience-based early exit (PABEE, Zhou et al. 2020): leave at exit ``i`` when the argmax is
    the same class at ``patience`` consecutive exits ending at ``i``.

    So no sample leaves before exit ``patience - 1``; ``patience=1`` lets every sample leave at
    exit 0, and ``patience >= num_exits`` never lets one leave early. (PABEE counts the exits
    that *agree with the previous one*: its patience ``t`` is ``patience = t + 1`` here.)

    Prediction: that class (the current exit's argmax). Confidence: the max softmax of the current
    exit at its ``temperature`` (one, or one per exit); the argmax, and so the decision, does not
    depend on the temperature.
    """

    def __init__(self, patience: int, temperature: float | Sequence[float] = 1.0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, (int, float)):
            raise TypeError(f"patience must be an integer >= 1, got {patience!r}")
        if not (float(patience).is_integer() and patience >= 1):
            raise ValueError(f"patience must be an integer >= 1, got {patience}")
        self.patience = int(patience)
        self.temperature = _temperatures(temperature)

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        conf, pred = _max_softmax(outputs[exit_idx].logits, self.temperature_at(exit_idx))
        first = exit_idx - self.patience + 1
        if first < 0:
            return ExitDecision(torch.zeros_like(pred, dtype=torch.bool), pred, conf)
        mask = torch.ones_like(pred, dtype=torch.bool)
        for j in range(first, exit_idx):
            mask &= outputs[j].logits.argmax(dim=1) == pred
        return ExitDecision(mask, pred, conf)

    def __repr__(self) -> str:
        return f"Patience(patience={self.patience}, temperature={self.temperature})"


class Capped(ExitPolicy):
    """Wrap a policy so that no sample runs past exit ``max_exit``: a defence that caps the
    worst-case cost (e.g. under a slowdown attack) at that exit's path FLOPs.

    At ``max_exit`` every sample still running leaves with the inner policy's prediction. The
    last exit, temperatures, decision FLOPs and checks are the inner policy's.
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

    def final(self, outputs: Sequence[ExitOutput]) -> ExitDecision:
        return self.policy.final(outputs)

    def temperature_at(self, exit_idx: int) -> float:
        return self.policy.temperature_at(exit_idx)

    def decision_flops(self, exit_idx: int, num_classes: int) -> int:
        return self.policy.decision_flops(exit_idx, num_classes)

    def check_exits(self, num_exits: int) -> None:
        self.policy.check_exits(num_exits)

    def __repr__(self) -> str:
        return f"Capped({self.policy!r}, max_exit={self.max_exit})"


class Offloaded(ExitPolicy):
    """The rule of a model split after side exit ``k`` (seed 002): the edge's exits ``0..k``
    decide with ``policy``; every sample still running after exit ``k`` is offloaded, and the
    cloud answers at the final exit (its plain argmax, as ``exitwise serve`` does by default).

    With :func:`~exitwise.routing.simulate` it gives, from outputs collected once, exactly what
    :class:`~exitwise.serving.edge.EdgeRuntime` and the cloud answer together; the decision
    FLOPs are the inner rule's at the edge's exits and none in the cloud.
    """

    def __init__(self, policy: ExitPolicy, k: int) -> None:
        if k < 0:
            raise ValueError(f"k must be a side exit >= 0, got {k}")
        self.policy, self.k = policy, k

    def decide(self, exit_idx: int, outputs: Sequence[ExitOutput]) -> ExitDecision:
        if exit_idx <= self.k:
            return self.policy.decide(exit_idx, outputs)
        dec = final_decision(outputs[exit_idx])
        return ExitDecision(torch.zeros_like(dec.exit_mask), dec.prediction, dec.confidence)

    def final(self, outputs: Sequence[ExitOutput]) -> ExitDecision:
        return final_decision(outputs[-1])

    def temperature_at(self, exit_idx: int) -> float:
        return self.policy.temperature_at(exit_idx) if exit_idx <= self.k else 1.0

    def decision_flops(self, exit_idx: int, num_classes: int) -> int:
        return self.policy.decision_flops(exit_idx, num_classes) if exit_idx <= self.k else 0

    def check_exits(self, num_exits: int) -> None:
        if self.k > num_exits - 2:
            raise ValueError(
                f"k must be a side exit in 0..{num_exits - 2} of a {num_exits}-exit model, "
                f"got {self.k}"
            )
        self.policy.check_exits(num_exits)

    def describe(self) -> str:
        return f"{self.policy.describe()} on exits 0..{self.k}, then the cloud's final exit"

    def __repr__(self) -> str:
        return f"Offloaded({self.policy!r}, k={self.k})"


# ------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class PolicyContext:
    """What a rule may need besides its threshold, fitted on the VALIDATION split only.

    Attributes:
        temperature: one temperature for every exit, or one per exit (the last included), e.g.
            from :func:`exitwise.calibration.fit_temperatures`.
        exit_weights: one weight per exit for the committee (each exit's validation accuracy);
            ``None`` when not fitted.
    """

    temperature: float | tuple[float, ...] = 1.0
    exit_weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class PolicyFamily:
    """An exit rule with one free threshold: how to build it and which thresholds to sweep.

    Attributes:
        name: the registry name (``eval.policies`` in a run config).
        label: what the threshold means, for reports.
        make: ``make(t, ctx)`` builds the rule at threshold ``t`` with the validation-fitted
            values of ``ctx`` (a :class:`PolicyContext`).
        thresholds: the grid swept by the efficiency study (see :meth:`thresholds_for`).
        needs_confidence: True when the rule reads learned exit confidences (EENets exits).
        grid: when the grid depends on the network, ``grid(num_exits)`` gives it
            (patience: ``1..num_exits``); ``thresholds`` then holds the grid of a 4-exit network.
    """

    name: str
    label: str
    make: Callable[[float, PolicyContext], ExitPolicy]
    thresholds: tuple[float, ...]
    needs_confidence: bool = False
    grid: Callable[[int], tuple[float, ...]] | None = None

    def thresholds_for(self, num_exits: int) -> tuple[float, ...]:
        """The thresholds to sweep on a network of ``num_exits`` exits."""
        return self.thresholds if self.grid is None else self.grid(num_exits)


def default_thresholds() -> list[float]:
    """A grid for max-probability thresholds: dense near 1, where the decisions change most."""
    grid = [i / 20 for i in range(0, 20)] + [0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
    return grid + [0.9995, 0.9999, 0.99999, 1.0, 1.01]


def _max_probability(t: float, ctx: PolicyContext) -> MaxProbability:
    return MaxProbability(t, ctx.temperature)


def _entropy_normalized(t: float, ctx: PolicyContext) -> Entropy:
    return Entropy(t, normalized=True, temperature=ctx.temperature)


def _learned_confidence(t: float, ctx: PolicyContext) -> LearnedConfidence:
    return LearnedConfidence(t)


def _committee(t: float, ctx: PolicyContext) -> Committee:
    if ctx.exit_weights is None:
        raise ValueError(
            "the committee needs exit weights (each exit's validation accuracy); pass "
            "PolicyContext(exit_weights=...) fitted on the validation split"
        )
    return Committee(t, ctx.exit_weights, ctx.temperature)


def _mean_ensemble(t: float, ctx: PolicyContext) -> MeanEnsemble:
    return MeanEnsemble(t, ctx.temperature)


def _patience(t: float, ctx: PolicyContext) -> Patience:
    if not float(t).is_integer():
        raise ValueError(f"patience must be an integer >= 1, got {t}")
    return Patience(int(t), ctx.temperature)


def _patience_grid(num_exits: int) -> tuple[float, ...]:
    return tuple(float(p) for p in range(1, num_exits + 1))


POLICIES: Registry[PolicyFamily] = Registry("exit policy")
"""The exit rules a run can sweep, by name (``exitwise info`` lists them)."""

for _family in (
    PolicyFamily(
        "max_probability",
        "max softmax probability >= t",
        _max_probability,
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
        _learned_confidence,
        (0.0, 0.005, 0.01, 0.02, 0.03)
        + tuple(i / 20 for i in range(1, 21))
        + (0.98, 0.99, 0.995, 0.999, 0.9999, 1.0, 1.01),
        needs_confidence=True,
    ),
    PolicyFamily(
        "committee",
        "accuracy-weighted committee's top probability >= t",
        _committee,
        tuple(default_thresholds()),
    ),
    PolicyFamily(
        "mean_ensemble",
        "mean of the exits' probabilities: top probability >= t",
        _mean_ensemble,
        tuple(default_thresholds()),
    ),
    PolicyFamily(
        "patience",
        "same prediction at t consecutive exits",
        _patience,
        _patience_grid(4),
        grid=_patience_grid,
    ),
):
    POLICIES.register(_family.name, _family)
