"""Per-exit thresholds (floor 4): one threshold per side exit, chosen on validation outputs.

Every exit rule of :mod:`exitwise.policies` has one threshold shared by all side exits. Exits
differ in quality, so a threshold per exit buys accuracy where an exit is reliable and saves
FLOPs where it is not. This module searches such thresholds on outputs computed once (as
:func:`exitwise.routing.simulate` does), generically on *scores*: a sample leaves at the first
side exit ``i`` with ``scores[i] >= thresholds[i]``, else at the last exit.

* :func:`max_probability_scores` (or :func:`policy_scores`) turns exit outputs into scores and
  predictions;
* :func:`search_per_exit` picks the thresholds for one accuracy target or one FLOPs budget;
* :func:`per_exit_front` picks them for a list of targets or budgets (the accuracy-versus-FLOPs
  front of per-exit thresholds, to plot next to the shared-threshold sweep).

The result's :meth:`PerExitThresholds.policy` is an ordinary ``MaxProbability(thresholds,
temperature)``: it runs live in :func:`~exitwise.routing.route` and makes the decisions the search
counted. Thresholds are fitted on validation data; test data only measures them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from exitwise.outputs import ExitOutput
from exitwise.policies import ExitPolicy, MaxProbability, default_thresholds

__all__ = [
    "NEVER",
    "SharedBaseline",
    "PerExitThresholds",
    "policy_scores",
    "max_probability_scores",
    "search_per_exit",
    "per_exit_front",
]

Objective = Literal["accuracy", "flops"]

_NEVER_MARGIN = 0.01  # "never leave" = score_bound + this
NEVER = 1.0 + _NEVER_MARGIN
"""A max-probability threshold no probability reaches: "never leave early" (1.01, the top of
:func:`~exitwise.policies.default_thresholds`; unlike ``inf``, it is JSON-safe)."""
_PRICES = (0.0, *(10.0 ** (-3.5 + 4.5 * k / 15) for k in range(16)))  # 1e-3.5 .. 10
_MAX_PASSES = 20
_BISECTIONS = 6  # price halvings where neighbouring trade-off points straddle the objective


# ------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SharedBaseline:
    """The best single threshold shared by every side exit, from the shared grid, on the same
    data and objective as the per-exit search (the point the search starts from)."""

    threshold: float
    accuracy: float
    mean_flops: float
    exit_shares: tuple[float, ...]


@dataclass(frozen=True)
class PerExitThresholds:
    """Per-exit thresholds chosen on validation, with their validation numbers.

    Attributes:
        thresholds: one per side exit, shallow to deep; a value above ``score_bound`` (1.01
            for probabilities) means "never leave at this exit".
        accuracy: accuracy on the search data (validation).
        mean_flops: mean FLOPs per sample on the search data (units of ``path_flops``).
        exit_shares: share of the samples leaving at each exit (all exits, the last included).
        objective: ``"accuracy"`` (cheapest point with accuracy >= ``target``) or ``"flops"``
            (most accurate point with mean FLOPs <= ``target``).
        target: the accuracy target or the FLOPs budget.
        met: whether the point meets the target (or budget) on the search data. When no point
            does, the search returns the closest one (the most accurate for an accuracy target,
            the cheapest for a budget) with ``met=False``.
        shared: the best shared threshold for the same objective, where the search started;
            the search is never worse than it on the search data.
    """

    thresholds: tuple[float, ...]
    accuracy: float
    mean_flops: float
    exit_shares: tuple[float, ...]
    objective: Objective
    target: float
    met: bool
    shared: SharedBaseline

    def policy(self, temperature: float | Sequence[float] = 1.0) -> MaxProbability:
        """``MaxProbability(thresholds, temperature)``: these thresholds as a live exit rule
        (for scores from :func:`max_probability_scores` with the same temperatures)."""
        return MaxProbability(self.thresholds, temperature)


# -------------------------------------------------------------------------------------- scores


def policy_scores(outputs: Sequence[ExitOutput], policy: ExitPolicy) -> tuple[Tensor, Tensor]:
    """Scores and predictions of a rule whose decision is ``confidence >= threshold``.

    Every side exit's score is ``policy.decide(i, outputs[: i + 1]).confidence`` (the rule's
    own threshold does not matter) and its prediction that decision's; the last exit predicts
    with ``policy.final``, as :func:`~exitwise.routing.route` does. This fits
    :class:`~exitwise.policies.MaxProbability` and :class:`~exitwise.policies.LearnedConfidence`,
    not rules that compare another number (e.g. :class:`~exitwise.policies.Entropy`).

    Shape:
        outputs: ``E`` exits of ``N`` samples each; returns scores ``(E-1, N)`` and predictions
        ``(E, N)`` int64, on the CPU.
    """
    if len(outputs) < 2:
        raise ValueError(f"per-exit thresholds need at least 2 exits, got {len(outputs)}")
    decisions = [policy.decide(i, outputs[: i + 1]) for i in range(len(outputs) - 1)]
    decisions.append(policy.final(outputs))
    scores = torch.stack([d.confidence for d in decisions[:-1]])
    preds = torch.stack([d.prediction for d in decisions])
    return scores.cpu(), preds.cpu().to(torch.int64)


def max_probability_scores(
    outputs: Sequence[ExitOutput], temperature: float | Sequence[float] = 1.0
) -> tuple[Tensor, Tensor]:
    """Max softmax probability (after ``temperature``) at each side exit, and predictions.

    The scores are exactly the confidences ``MaxProbability(t, temperature)`` compares, so
    thresholds searched on them run live with :meth:`PerExitThresholds.policy`.

    Shape:
        as :func:`policy_scores`: scores ``(E-1, N)`` in [0, 1], predictions ``(E, N)``.
    """
    return policy_scores(outputs, MaxProbability(NEVER, temperature))


# ----------------------------------------------------------------------------- the search itself

_DTYPES = (torch.float16, torch.float32, torch.float64)


def _check_inputs(
    scores: Tensor,
    predictions: Tensor,
    labels: Tensor,
    path_flops: Sequence[float] | Tensor,
    score_bound: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores ``(E-1, N)``, correctness ``(E, N)`` bool and path FLOPs ``(E,)`` float64, as
    NumPy arrays (the search counts on the CPU)."""
    for name, value, dims, what in (
        ("scores", scores, 2, "(E-1, N), one row per side exit"),
        ("predictions", predictions, 2, "(E, N), one row per exit"),
        ("labels", labels, 1, "(N,)"),
    ):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a tensor {what}, got {type(value).__name__}")
        if value.dim() != dims:
            raise ValueError(f"{name} must be a tensor {what}, got shape {tuple(value.shape)}")
    num_exits, n = predictions.shape
    if num_exits < 2 or n < 1:
        raise ValueError(
            f"predictions must have >= 2 exits and >= 1 sample, got shape {(num_exits, n)}"
        )
    if tuple(scores.shape) != (num_exits - 1, n) or tuple(labels.shape) != (n,):
        raise ValueError(
            f"shapes do not match: scores {tuple(scores.shape)}, predictions "
            f"{tuple(predictions.shape)}, labels {tuple(labels.shape)}; with {num_exits} exits "
            f"and {n} samples expected scores {(num_exits - 1, n)} and labels {(n,)}"
        )
    if scores.dtype not in _DTYPES:
        raise ValueError(
            f"scores must be float16, float32 or float64 (the dtype the rule compares in), got "
            f"{scores.dtype}; compute them from float32 outputs"
        )
    if predictions.is_floating_point() or labels.is_floating_point():
        raise ValueError(
            f"predictions and labels must be integer class indices, got {predictions.dtype} "
            f"and {labels.dtype}"
        )
    flops = torch.as_tensor(path_flops, dtype=torch.float64).cpu()
    if tuple(flops.shape) != (num_exits,):
        raise ValueError(
            f"path_flops must have one value per exit ({num_exits}), got shape "
            f"{tuple(flops.shape)}; pass costs.path_flops"
        )
    if not bool(torch.isfinite(flops).all()) or bool((flops < 0).any()):
        raise ValueError(f"path_flops must be finite and >= 0, got {flops.tolist()}")
    s = scores.detach().cpu().numpy()
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if float(s.max()) > score_bound:
        raise ValueError(
            f"scores reach {float(s.max())} > score_bound={score_bound}; pass a score_bound no "
            "score can exceed (1.0 for probabilities and learned confidences)"
        )
    correct = (predictions.detach().cpu() == labels.detach().cpu().unsqueeze(0)).numpy()
    return s, correct, flops.numpy()


def _prefer(
    correct: np.ndarray, flops: np.ndarray, objective: Objective, goal: float, n: int
) -> list[np.ndarray]:
    """Sort keys (higher is better, compared in order) of points with ``correct`` samples
    and total ``flops``: meets the objective; then the objective's number; then the other."""
    acc, mean_flops = correct / n, flops / n
    if objective == "accuracy":
        feasible = acc >= goal
        primary = np.where(feasible, -mean_flops, acc)
        secondary = np.where(feasible, acc, -mean_flops)
    else:
        feasible = mean_flops <= goal
        primary = np.where(feasible, acc, -mean_flops)
        secondary = np.where(feasible, -mean_flops, acc)
    return [feasible.astype(np.float64), primary, secondary]


def _argbest(keys: Sequence[np.ndarray]) -> int:
    """Index of the lexicographically largest entry of ``keys`` (the first on a full tie)."""
    alive = np.ones(keys[0].shape, dtype=bool)
    for k in keys:
        alive &= k == k[alive].max()
    return int(np.flatnonzero(alive)[0])


def _beats(keys: Sequence[np.ndarray], a: int, b: int) -> bool:
    """Whether entry ``a`` is strictly better than entry ``b`` under ``keys``."""
    return [float(k[a]) for k in keys] > [float(k[b]) for k in keys]


Keys = Callable[[np.ndarray, np.ndarray], list[np.ndarray]]  # (correct, total flops) -> keys


class _Search:
    """Candidate grids and the vectorised counting shared by every search on one problem.

    A configuration is one candidate index per side exit. :meth:`evaluate` counts one
    configuration; :meth:`coordinate` counts every candidate of one exit, the others fixed,
    in O(E N + E C) with one histogram (each sample's candidate bin is found once per exit).
    Counts are integers and FLOPs are exit counts times ``path_flops``, so two configurations
    with the same exits and correct samples get bit-identical numbers.
    """

    def __init__(
        self,
        scores: np.ndarray,
        correct: np.ndarray,
        path_flops: np.ndarray,
        shared_grid: Sequence[float],
        num_candidates: int,
        score_bound: float,
    ) -> None:
        self.scores, self.path_flops = scores, path_flops
        self.correct = correct.astype(np.int8)  # (E, N) 1 where the exit's prediction is right
        self.num_exits, self.n = correct.shape
        dtype = scores.dtype
        grid = np.array([float(g) for g in shared_grid] + [score_bound + _NEVER_MARGIN])
        if np.isnan(grid).any():
            raise ValueError("shared_grid contains NaN")
        self.grid = np.unique(grid.astype(dtype))  # sorted, in the scores' dtype
        self.bins: list[np.ndarray] = []  # per side exit: candidates <= each sample's score
        self.values: list[np.ndarray] = []  # per side exit: candidate thresholds, ascending
        self.grid_pos: list[np.ndarray] = []  # per side exit: candidate index of each grid value
        for j in range(self.num_exits - 1):
            uniq = np.unique(scores[j])
            cands = [self.grid, uniq[:1]]  # the lowest score: every sample leaves
            if uniq.size > 1:
                # Midpoints between neighbouring distinct scores at evenly spaced quantiles: a
                # threshold there splits the samples the same way when a live score differs
                # from the simulated one in its last bit.
                k = np.linspace(1, uniq.size - 1, min(num_candidates, uniq.size - 1))
                k = np.unique(np.round(k).astype(np.int64))
                lo, hi = uniq[k - 1], uniq[k]
                cands.append((lo + (hi - lo) / dtype.type(2)).astype(dtype))
            values = np.unique(np.concatenate(cands))
            self.bins.append(np.searchsorted(values, scores[j], side="right").astype(np.int32))
            self.values.append(values)
            self.grid_pos.append(np.searchsorted(values, self.grid))
        self._shared: tuple[np.ndarray, np.ndarray] | None = None

    # --- counting ---

    def _leave(self, config: Sequence[int], i: int) -> np.ndarray:
        return self.scores[i] >= self.values[i][config[i]]

    def exits(self, config: Sequence[int]) -> np.ndarray:
        """``(N,)`` exit each sample leaves at."""
        ex = np.full(self.n, self.num_exits - 1, dtype=np.intp)
        for i in range(self.num_exits - 2, -1, -1):
            ex = np.where(self._leave(config, i), i, ex)
        return ex

    def _count(self, ex: np.ndarray) -> tuple[int, np.ndarray]:
        n_correct = int(np.take_along_axis(self.correct, ex[None], 0).sum())
        return n_correct, np.bincount(ex, minlength=self.num_exits)

    def evaluate(self, config: Sequence[int]) -> tuple[int, np.ndarray]:
        """Correct samples and exit counts ``(E,)`` of one configuration."""
        return self._count(self.exits(config))

    def evaluate_all(self, configs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Correct samples ``(K,)`` and total FLOPs ``(K,)`` of several configurations."""
        counted = [self.evaluate(c) for c in configs]
        correct = np.array([c for c, _ in counted], dtype=np.int64)
        return correct, self.flops(np.stack([e for _, e in counted]))

    def coordinate(self, config: Sequence[int], j: int) -> tuple[np.ndarray, np.ndarray]:
        """Correct samples ``(C,)`` and exit counts ``(C, E)`` for every candidate of exit
        ``j``, the other exits at ``config``."""
        last, correct = self.num_exits - 1, self.correct
        down = np.full(self.n, last, dtype=np.int8)  # where a sample goes if it passes j
        down_ok = correct[last]
        for i in range(last - 1, j, -1):
            leave = self._leave(config, i)
            down, down_ok = np.where(leave, i, down), np.where(leave, correct[i], down_ok)
        stay, stay_ok = down, down_ok  # where it goes if exit j lets nobody leave
        for i in range(j - 1, -1, -1):
            leave = self._leave(config, i)
            stay, stay_ok = np.where(leave, i, stay), np.where(leave, correct[i], stay_ok)
        # Candidate c lets the samples reaching j whose bin (candidates <= score) is > c leave
        # at j instead of `down`: one histogram over (bin, down, correct at j, correct at down)
        # and suffix sums over the bins count every candidate at once.
        cells = 4 * self.num_exits
        size = (self.values[j].size + 1) * cells
        code = self.bins[j] * cells + (down.astype(np.int32) * 4 + correct[j] * 2 + down_ok)
        hist = np.bincount(np.where(stay > j, code, size), minlength=size + 1)[:size]
        hist = hist.reshape(-1, self.num_exits, 2, 2)
        moved = np.cumsum(hist[::-1], axis=0)[::-1][1:]  # (C, E, 2, 2): bins > c
        moved_to = moved.sum(axis=(2, 3))  # (C, E) leaving at j instead of each exit
        gained = moved[:, :, 1, 0].sum(axis=1) - moved[:, :, 0, 1].sum(axis=1)
        counts = np.bincount(stay, minlength=self.num_exits) - moved_to
        counts[:, j] += moved_to.sum(axis=1)
        return int(stay_ok.sum()) + gained, counts

    def flops(self, counts: np.ndarray) -> np.ndarray:
        """Total FLOPs of exit counts ``(..., E)`` (exact for integer path FLOPs)."""
        return counts.astype(np.float64) @ self.path_flops

    def shared_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Correct samples ``(G,)`` and total FLOPs ``(G,)`` of every shared grid value."""
        if self._shared is None:
            self._shared = self.evaluate_all([self.shared_config(g) for g in range(self.grid.size)])
        return self._shared

    def shared_config(self, g: int) -> list[int]:
        return [int(p[g]) for p in self.grid_pos]

    # --- searching ---

    def price_keys(self, mu: float) -> Keys:
        """Keys of ``accuracy - mu * mean_flops / path_flops[-1]``, ties to fewer FLOPs."""
        scale = self.n * max(float(self.path_flops[-1]), 1e-300)

        def keys_of(correct: np.ndarray, flops: np.ndarray) -> list[np.ndarray]:
            return [correct / self.n - mu * (flops / scale), -flops]

        return keys_of

    def ascend(self, config: Sequence[int], keys_of: Keys, seen: _Seen | None = None) -> list[int]:
        """Coordinate ascent: at each side exit in turn, move to its best candidate when that
        strictly beats the current one under ``keys_of``; repeat until a pass moves nothing
        (it ends: every move improves, and there are finitely many configurations). Every
        configuration counted on the way is offered to ``seen``."""
        config = list(config)
        for _ in range(_MAX_PASSES):
            moved = False
            for j in range(self.num_exits - 1):
                correct, counts = self.coordinate(config, j)
                flops = self.flops(counts)
                if seen is not None:
                    seen.offer(config, j, correct, flops)
                keys = keys_of(correct, flops)
                best = _argbest(keys)
                if _beats(keys, best, config[j]):
                    config[j], moved = best, True
            if not moved:
                break
        return config

    def at_price(
        self, mu: float, starts: Sequence[list[int]], seen: _Seen | None = None
    ) -> list[int]:
        """Coordinate ascent at price ``mu`` from the best of ``starts`` and the shared grid."""
        keys_of = self.price_keys(mu)
        correct_g, flops_g = self.shared_points()
        options = [self.shared_config(_argbest(keys_of(correct_g, flops_g))), *starts]
        correct, flops = self.evaluate_all(options)
        return self.ascend(options[_argbest(keys_of(correct, flops))], keys_of, seen)

    def tradeoff_points(self) -> list[tuple[float, list[int]]]:
        """``(mu, configuration)`` for every price of :data:`_PRICES`, each from the shared
        grid alone (so no point depends on another)."""
        return [(mu, self.at_price(mu, [])) for mu in _PRICES]

    def choose(
        self, objective: Objective, goal: float, tradeoffs: Sequence[tuple[float, list[int]]]
    ) -> PerExitThresholds:
        """Search for one objective; see :func:`search_per_exit` for the steps."""

        def keys_of(correct: np.ndarray, flops: np.ndarray) -> list[np.ndarray]:
            return _prefer(correct, flops, objective, goal, self.n)

        correct_g, flops_g = self.shared_points()
        g = _argbest(keys_of(correct_g, flops_g))
        seen = _Seen(keys_of)
        seen.offer_config(self, self.shared_config(g))  # the baseline: never worse than it
        met = [seen.offer_config(self, config) for _, config in tradeoffs]
        # Bisect the price wherever neighbouring trade-off points straddle the objective.
        for k in range(len(tradeoffs) - 1):
            if met[k] == met[k + 1]:
                continue
            (lo, c_lo), (hi, c_hi) = tradeoffs[k], tradeoffs[k + 1]
            for _ in range(_BISECTIONS):
                mid = math.sqrt(lo * hi) if lo > 0 else hi / 4
                c_mid = self.at_price(mid, [c_lo, c_hi], seen)
                if seen.offer_config(self, c_mid) == met[k]:
                    lo, c_lo = mid, c_mid
                else:
                    hi, c_hi = mid, c_mid
        self.ascend(seen.config, keys_of, seen)  # polish on the objective itself
        config = seen.config
        n_correct, counts = self.evaluate(config)
        shared_counts = self.evaluate(self.shared_config(g))[1]
        flops = self.flops(counts)
        return PerExitThresholds(
            thresholds=tuple(float(self.values[j][c]) for j, c in enumerate(config)),
            accuracy=n_correct / self.n,
            mean_flops=float(flops) / self.n,
            exit_shares=tuple(int(c) / self.n for c in counts),
            objective=objective,
            target=float(goal),
            met=_meets(keys_of(np.array([n_correct]), flops[None])),
            shared=SharedBaseline(
                threshold=float(self.grid[g]),
                accuracy=int(correct_g[g]) / self.n,
                mean_flops=float(flops_g[g]) / self.n,
                exit_shares=tuple(int(c) / self.n for c in shared_counts),
            ),
        )


class _Seen:
    """The best configuration counted so far under one objective's keys."""

    def __init__(self, keys_of: Keys) -> None:
        self.keys_of = keys_of
        self.config: list[int] = []
        self.keys: list[float] = []

    def offer(self, config: Sequence[int], j: int, correct: np.ndarray, flops: np.ndarray) -> None:
        """Offer ``config`` with exit ``j`` at each of its candidates (counted by
        :meth:`_Search.coordinate`); keep the best if it beats the one held."""
        keys = self.keys_of(correct, flops)
        best = _argbest(keys)
        config = list(config)
        config[j] = best
        self._keep([float(k[best]) for k in keys], config)

    def offer_config(self, search: _Search, config: Sequence[int]) -> bool:
        """Offer one configuration; returns whether it meets the objective."""
        n_correct, counts = search.evaluate(config)
        keys = self.keys_of(np.array([n_correct]), search.flops(counts)[None])
        self._keep([float(k[0]) for k in keys], list(config))
        return _meets(keys)

    def _keep(self, value: list[float], config: list[int]) -> None:
        if not self.config or value > self.keys:
            self.config, self.keys = config, value


def _meets(keys: Sequence[np.ndarray]) -> bool:
    """Whether the single point of ``keys`` (from :func:`_prefer`) meets the objective."""
    return bool(keys[0][0] > 0)


def _objective(
    target_accuracy: float | None, flops_budget: float | None
) -> tuple[Objective, float]:
    if target_accuracy is not None and flops_budget is None:
        objective: Objective = "accuracy"
        goal = float(target_accuracy)
    elif flops_budget is not None and target_accuracy is None:
        objective, goal = "flops", float(flops_budget)
    else:
        raise ValueError(
            "give exactly one of target_accuracy (cheapest point at least this accurate) and "
            f"flops_budget (most accurate point at most this costly); got {target_accuracy=}, "
            f"{flops_budget=}"
        )
    if not math.isfinite(goal):
        raise ValueError(f"the {objective} target must be finite, got {goal}")
    return objective, goal


def _searcher(
    scores: Tensor,
    predictions: Tensor,
    labels: Tensor,
    path_flops: Sequence[float] | Tensor,
    shared_grid: Sequence[float] | None,
    num_candidates: int,
    score_bound: float,
) -> _Search:
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    s, correct, flops = _check_inputs(scores, predictions, labels, path_flops, score_bound)
    grid = default_thresholds() if shared_grid is None else list(shared_grid)
    return _Search(s, correct, flops, grid, num_candidates, score_bound)


def search_per_exit(
    scores: Tensor,
    predictions: Tensor,
    labels: Tensor,
    path_flops: Sequence[float] | Tensor,
    *,
    target_accuracy: float | None = None,
    flops_budget: float | None = None,
    shared_grid: Sequence[float] | None = None,
    num_candidates: int = 100,
    score_bound: float = 1.0,
) -> PerExitThresholds:
    """Per-exit thresholds for one objective, chosen on the given (validation) data.

    A sample leaves at the first side exit ``i`` with ``scores[i] >= thresholds[i]``, else at
    the last exit, costing ``path_flops`` of the exit it leaves at. Give one objective:

    * ``target_accuracy``: the thresholds with the lowest mean FLOPs whose accuracy >= the
      target (ties: the more accurate); e.g. the final exit's validation accuracy - 0.005;
    * ``flops_budget``: the highest accuracy whose mean FLOPs <= the budget (ties: the cheaper),
      in the units of ``path_flops`` (e.g. ``0.5 * costs.backbone_flops``).

    When nothing meets the objective, the result is the most accurate point (accuracy target)
    or the cheapest point (budget) found, with ``met=False``; it is not an error.

    Algorithm (deterministic; every number is a count on the data, no randomness):

    1. Candidates per side exit: midpoints between neighbouring distinct scores of that exit at
       ``num_candidates`` evenly spaced quantiles (a midpoint splits the samples as it does
       live, where a score may differ in its last bit), the lowest score, the whole
       ``shared_grid`` and "never leave" (``score_bound + 0.01``). Thresholds take only these
       values, which limits how finely they can fit the validation set.
    2. Baseline: the best single threshold shared by every exit, from ``shared_grid``, for the
       objective (as a sweep would choose it).
    3. Trade-off points: for 17 prices ``mu`` of FLOPs, 0 and 10^-3.5 to 10, coordinate ascent
       on ``accuracy - mu * mean_flops / path_flops[-1]`` from the best shared threshold at that
       price. The constrained objective alone gets stuck near the baseline (no single
       threshold can move without breaking the target or adding FLOPs); a price lets one exit
       trade accuracy for FLOPs that another exit buys back.
    4. Bisection: where the points of two neighbouring prices straddle the objective (one meets
       it, the other not), 6 bisections of the price, each an ascent from the better of the
       two neighbours' points and the best shared threshold.
    5. Choice: every configuration counted on the way (the points of 2 and 3, and every
       candidate of every ascent step of 4) competes under the objective's order: meeting it
       first, then its number, then the other number. The best is improved by coordinate
       ascent on that order itself, and the best configuration ever counted is returned. The
       baseline competes, so on this data the result is never worse than it.

    Coordinate ascent visits the side exits in turn, counts every candidate of one exit at once
    (one histogram of the samples reaching it by score bin, then suffix sums: O(E N) per
    exit), moves only when the best candidate strictly beats the current thresholds, and stops
    after a pass without a move. Under a second for 40,000 samples and 5 exits on a CPU core.

    Args:
        scores: ``(E-1, N)`` score of each side exit (higher = surer), e.g. from
            :func:`max_probability_scores`; no score may exceed ``score_bound``.
        predictions: ``(E, N)`` class predicted at each exit.
        labels: ``(N,)`` true classes.
        path_flops: ``(E,)`` FLOPs of leaving at each exit (``costs.path_flops``, plus any
            decision FLOPs).
        target_accuracy: accuracy in [0, 1] to reach at the lowest cost.
        flops_budget: mean FLOPs per sample not to exceed.
        shared_grid: the shared thresholds of the baseline (default: the max-probability grid,
            :func:`~exitwise.policies.default_thresholds`).
        num_candidates: quantile candidates per side exit.
        score_bound: the highest possible score (1 for probabilities).

    Returns:
        The thresholds, their numbers on this data and the shared baseline. Build the live rule
        with ``result.policy(temperature)``.

    Shape:
        scores ``(E-1, N)``, predictions ``(E, N)``, labels ``(N,)``, path_flops ``(E,)``; the
        search runs on the CPU (inputs elsewhere are copied).
    """
    objective, goal = _objective(target_accuracy, flops_budget)
    search = _searcher(
        scores, predictions, labels, path_flops, shared_grid, num_candidates, score_bound
    )
    return search.choose(objective, goal, search.tradeoff_points())


def per_exit_front(
    scores: Tensor,
    predictions: Tensor,
    labels: Tensor,
    path_flops: Sequence[float] | Tensor,
    *,
    target_accuracies: Sequence[float] | None = None,
    flops_budgets: Sequence[float] | None = None,
    shared_grid: Sequence[float] | None = None,
    num_candidates: int = 100,
    score_bound: float = 1.0,
) -> list[PerExitThresholds]:
    """:func:`search_per_exit` for several accuracy targets or several FLOPs budgets.

    The accuracy-versus-FLOPs front of per-exit thresholds, to plot next to the shared
    threshold sweep: one chosen point per target (or budget), in the order given, with its
    numbers on this (validation) data; measure them on test with ``simulate(test_outputs,
    point.policy(temperature), costs)``. The trade-off points of step 3 are computed once
    for all targets, so each result equals ``search_per_exit`` with that target.
    """
    if target_accuracies is not None and flops_budgets is None:
        objective: Objective = "accuracy"
        goals = [_objective(float(g), None)[1] for g in target_accuracies]
    elif flops_budgets is not None and target_accuracies is None:
        objective = "flops"
        goals = [_objective(None, float(g))[1] for g in flops_budgets]
    else:
        raise ValueError("give exactly one of target_accuracies and flops_budgets")
    search = _searcher(
        scores, predictions, labels, path_flops, shared_grid, num_candidates, score_bound
    )
    archive = search.tradeoff_points()
    return [search.choose(objective, goal, archive) for goal in goals]
