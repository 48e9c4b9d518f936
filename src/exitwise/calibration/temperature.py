"""Temperature scaling and calibration error (floor 4), on exit logits computed once.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides an
exit's logits by one scalar ``T > 0`` fitted to minimise the negative log-likelihood (NLL) on
VALIDATION data; it leaves the argmax, and so the accuracy, unchanged. ``T > 1`` softens an
over-confident exit, ``T < 1`` sharpens an under-confident one.

* :func:`fit_temperature` fits one exit, :func:`fit_temperatures` every exit, and
  :func:`fit_global_temperature` one ``T`` shared by all exits (the sum of their NLLs);
* :func:`expected_calibration_error` and :func:`reliability` measure calibration with
  equal-width confidence bins (15 by default, as seed 002's code, after Guo et al.).

The fit is deterministic: with ``b = 1 / T`` the NLL is convex in ``b`` (a log-sum-exp of
functions linear in ``b``, minus a linear term), so its derivative is monotone; a Newton
iteration safeguarded by bisection on that derivative, in float64, finds the minimum inside
``bounds`` to machine precision. This is the same optimum as minimising over ``log T``, reached
without an optimiser's state or a learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from exitwise.outputs import ExitOutput

__all__ = [
    "ConfidenceBin",
    "Reliability",
    "fit_temperature",
    "fit_temperatures",
    "fit_global_temperature",
    "expected_calibration_error",
    "reliability",
]

DEFAULT_BOUNDS = (0.01, 100.0)
"""The range a fitted temperature is clamped to."""

_MAX_ITER = 100


# ------------------------------------------------------------------------------------- checks


def _check(logits: Tensor, labels: Tensor, what: str = "logits") -> tuple[Tensor, Tensor]:
    """``(logits, labels)`` as float64 ``(N, C)`` and int64 ``(N,)`` on the logits' device."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{what} must be a (N, num_classes) tensor, got {shape}")
    if not logits.is_floating_point():
        raise ValueError(f"{what} must be floating point, got {logits.dtype}")
    n, c = logits.shape
    if n == 0 or c == 0:
        raise ValueError(f"{what} must hold at least one sample and one class, got {(n, c)}")
    if not isinstance(labels, Tensor) or labels.shape != (n,):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must have shape ({n},) to match {what}, got {shape}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    labels = labels.to(logits.device, torch.int64)
    if int(labels.min()) < 0 or int(labels.max()) >= c:
        raise ValueError(
            f"labels must lie in [0, {c - 1}] for {c} classes, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    z = logits.to(torch.float64)
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{what} contain NaN or infinite values")
    return z, labels


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
    return t


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(b) for b in bounds)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < low <= high < inf, got {bounds}")
    return lo, hi


# -------------------------------------------------------------------------------------- fitting


def _derivatives(sets: Sequence[tuple[Tensor, Tensor]], beta: float) -> tuple[float, float]:
    """First and second derivatives in ``beta = 1/T`` of the summed mean NLLs of ``sets``."""
    grad = hess = 0.0
    for z, y in sets:
        p = torch.softmax(beta * z, dim=1)  # (N, C)
        mean_z = (p * z).sum(dim=1)  # E_p[z], (N,)
        var_z = (p * (z - mean_z.unsqueeze(1)).square()).sum(dim=1)  # Var_p[z], (N,)
        grad += float((mean_z - z.gather(1, y.unsqueeze(1)).squeeze(1)).mean())
        hess += float(var_z.mean())
    return grad, hess


def _fit(sets: Sequence[tuple[Tensor, Tensor]], bounds: tuple[float, float]) -> float:
    t_low, t_high = _check_bounds(bounds)
    sets = [(z, y) for z, y in sets if bool((z.amax(dim=1) > z.amin(dim=1)).any())]
    if not sets:
        return 1.0  # constant logits: every temperature gives the same NLL
    lo, hi = 1.0 / t_high, 1.0 / t_low  # bracket of beta = 1/T
    if _derivatives(sets, lo)[0] >= 0:
        return t_high  # the NLL only grows as beta grows: softest allowed
    if _derivatives(sets, hi)[0] <= 0:
        return t_low  # the NLL only falls: sharpest allowed
    beta = min(max(1.0, lo), hi)
    for _ in range(_MAX_ITER):
        grad, hess = _derivatives(sets, beta)
        if grad == 0:
            break
        if grad > 0:
            hi = beta
        else:
            lo = beta
        step = beta - grad / hess if hess > 0 else math.nan
        new = step if lo < step < hi else math.sqrt(lo * hi)  # Newton, else bisect (log scale)
        if abs(new - beta) <= 1e-13 * beta:
            beta = new
            break
        beta = new
    return min(max(1.0 / beta, t_low), t_high)


def fit_temperature(
    logits: Tensor, labels: Tensor, *, bounds: tuple[float, float] = DEFAULT_BOUNDS
) -> float:
    """The temperature that minimises the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Fit it on VALIDATION outputs. Deterministic; computed in float64.

    Args:
        logits: ``(N, num_classes)`` one exit's logits.
        labels: ``(N,)`` integer classes.
        bounds: the range ``T`` is clamped to (e.g. logits that classify every sample right
            would otherwise drive ``T`` to 0).

    Returns:
        ``T`` in ``bounds``; 1.0 when every row of ``logits`` is constant (no ``T`` is better).
    """
    return _fit([_check(logits, labels)], bounds)


def fit_temperatures(
    outputs: Sequence[ExitOutput],
    labels: Tensor,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> list[float]:
    """One temperature per exit (:func:`fit_temperature` of each), shallow to deep, the last
    exit included: what :class:`~exitwise.policies.PolicyContext` takes as ``temperature``."""
    if not outputs:
        raise ValueError("fit_temperatures needs the outputs of at least one exit")
    return [
        _fit([_check(o.logits, labels, f"logits of exit {i}")], bounds)
        for i, o in enumerate(outputs)
    ]


def fit_global_temperature(
    outputs: Sequence[ExitOutput],
    labels: Tensor,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> float:
    """One temperature shared by every exit: the ``T`` that minimises the sum of the exits'
    mean NLLs."""
    if not outputs:
        raise ValueError("fit_global_temperature needs the outputs of at least one exit")
    return _fit(
        [_check(o.logits, labels, f"logits of exit {i}") for i, o in enumerate(outputs)], bounds
    )


# ---------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class ConfidenceBin:
    """One equal-width confidence bin ``(lower, upper]`` (the first one includes 0).

    Attributes:
        lower, upper: the bin's edges in [0, 1].
        count: samples whose confidence falls in the bin.
        confidence: their mean confidence (max softmax); 0.0 when the bin is empty.
        accuracy: the share of them classified right; 0.0 when the bin is empty.
    """

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram (Guo et al. 2017, Fig. 1): accuracy against confidence per bin.

    Attributes:
        bins: the equal-width bins, from 0 to 1.
        ece: the expected calibration error: ``sum_b count_b / N * |accuracy_b - confidence_b|``.
        temperature: the temperature the confidences were computed at.
    """

    bins: tuple[ConfidenceBin, ...]
    ece: float
    temperature: float

    @property
    def num_samples(self) -> int:
        return sum(b.count for b in self.bins)


def reliability(
    logits: Tensor, labels: Tensor, temperature: float = 1.0, bins: int = 15
) -> Reliability:
    """The reliability diagram of one exit at ``temperature``, with ``bins`` equal-width bins.

    A sample's confidence is the max softmax of ``logits / temperature``; it falls in the bin
    ``(lower, upper]`` that holds it (the first bin also holds 0), as in Guo et al.'s code that
    seed 002 uses. Computed in float64.

    Args:
        logits: ``(N, num_classes)``.
        labels: ``(N,)`` integer classes.
        temperature: > 0.
        bins: the number of bins (>= 1).
    """
    z, y = _check(logits, labels)
    t = _check_temperature(temperature)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    conf, pred = torch.softmax(z / t, dim=1).max(dim=1)
    correct = (pred == y).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64, device=z.device)
    idx = torch.bucketize(conf, edges[1:-1])  # (lower, upper]: x <= edges[1] -> bin 0
    count = torch.bincount(idx, minlength=bins).to(torch.float64)
    conf_sum = torch.zeros(bins, dtype=torch.float64, device=z.device).index_add_(0, idx, conf)
    right_sum = torch.zeros(bins, dtype=torch.float64, device=z.device).index_add_(0, idx, correct)
    safe = count.clamp(min=1.0)
    mean_conf, acc = conf_sum / safe, right_sum / safe
    ece = float(((count / conf.shape[0]) * (acc - mean_conf).abs()).sum())
    edge_list = edges.tolist()
    out = tuple(
        ConfidenceBin(edge_list[b], edge_list[b + 1], int(n), float(c), float(a))
        for b, (n, c, a) in enumerate(
            zip(count.tolist(), mean_conf.tolist(), acc.tolist(), strict=True)
        )
    )
    return Reliability(out, ece, t)


def expected_calibration_error(
    logits: Tensor, labels: Tensor, temperature: float = 1.0, bins: int = 15
) -> float:
    """The expected calibration error (Naeini et al. 2015; Guo et al. 2017) of one exit at
    ``temperature``: the bin-count-weighted mean gap between accuracy and mean confidence over
    ``bins`` equal-width confidence bins (see :func:`reliability`). In [0, 1]."""
    return reliability(logits, labels, temperature, bins).ece
