"""Risk control for early exit: Conformal Risk Control and Learn-then-Test over exit thresholds.

After Jazbec et al. 2024, "Fast yet Safe: Early-Exiting with Risk Control" (NeurIPS), with
Conformal Risk Control (CRC; Angelopoulos et al. 2022) and Learn-then-Test (LTT; Angelopoulos
et al. 2021). Everything works on exit outputs computed once over a calibration set:

* ``scores`` ``(E-1, N)``: each side exit's score, higher = surer (e.g. the temperature-scaled
  maximum softmax probability, ``exitwise.calibration.thresholds.max_probability_scores``);
* ``preds`` ``(E, N)``: each exit's predicted class; ``labels`` ``(N,)``;
* ``path_flops`` ``(E,)``: the FLOPs of leaving at each exit (``CostAccount.path_flops``).

A sample leaves at the first side exit ``i`` with ``scores[i] >= t[i]``, else at the last exit;
this is :class:`~exitwise.policies.MaxProbability`'s rule, so a fitted result is an ordinary
exit policy (:meth:`RiskControlledThresholds.policy`) that runs live in ``route``.

Thresholds come as a *grid* ordered from the most conservative point to the cheapest: a shared
grid ``(L,)`` (one value for every side exit, non-increasing) or a per-exit path ``(L, E-1)``
(every column non-increasing), so that along the grid every sample leaves at the same exit or an
earlier one. Above the grid sits an implicit point, "nobody leaves early" (thresholds ``+inf``,
zero risk, the cost of the last exit): it is what a method returns when no grid point qualifies,
flagged with ``qualified=False``.

Risks (per sample, given the exit it left at; both 0 for a sample that reaches the last exit):

* ``"disagreement"``: 1[prediction at its exit != the last exit's prediction];
* ``"gap"``: 1[the last exit is correct and the prediction at its exit is wrong].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from exitwise.policies import MaxProbability

__all__ = [
    "RiskName",
    "RISKS",
    "MethodName",
    "METHODS",
    "RiskControlledThresholds",
    "MethodEvidence",
    "EpsilonEvidence",
    "RiskEvidence",
    "default_grid",
    "quantile_path",
    "exit_indices",
    "loss_matrix",
    "sample_losses",
    "hb_p_value",
    "fixed_sequence_test",
    "crc_index",
    "ltt_index",
    "fit_crc",
    "fit_ltt",
    "risk_evidence",
]

RiskName = Literal["disagreement", "gap"]
RISKS: tuple[RiskName, ...] = get_args(RiskName)
"""The risks a controller can bound, by name."""
MethodName = Literal["crc", "ltt"]
METHODS: tuple[MethodName, ...] = get_args(MethodName)
"""The controllers: Conformal Risk Control and Learn-then-Test."""

_QUANTILES = (0.1, 0.5, 0.9)


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class RiskControlledThresholds:
    """Per-exit thresholds chosen by CRC or LTT on a calibration set: an ordinary exit policy.

    Attributes:
        method: ``"crc"`` (expected risk <= ``epsilon``) or ``"ltt"`` (risk <= ``epsilon`` with
            probability >= 1 - ``delta``).
        risk: the risk bounded (:data:`RISKS`).
        epsilon: the risk level.
        delta: LTT's error level; ``None`` for CRC.
        thresholds: one threshold per side exit; ``inf`` everywhere when nothing qualified
            (nobody leaves early).
        calibration_risk: the risk of these thresholds on the calibration set (0 when nothing
            qualified).
        n: the number of calibration samples.
        qualified: False when no grid point qualified and the fallback (everyone to the last
            exit) was returned.
        grid_index: the chosen point's row in the grid; -1 for the fallback.
        per_exit: True when the grid was a per-exit path, False for a shared grid.
    """

    method: MethodName
    risk: RiskName
    epsilon: float
    delta: float | None
    thresholds: tuple[float, ...]
    calibration_risk: float
    n: int
    qualified: bool
    grid_index: int
    per_exit: bool

    def policy(self, temperature: float | Sequence[float] = 1.0) -> MaxProbability:
        """The exit rule with these thresholds; pass the temperature(s) the scores were computed
        with (``max_probability_scores(outputs, temperature)``), so the live rule compares the
        same numbers."""
        return MaxProbability(self.thresholds, temperature=temperature)


@dataclass(frozen=True)
class MethodEvidence:
    """What one method (CRC or LTT) did at one ``epsilon`` over random calibration/test splits.

    Attributes:
        test_risks: realised test risk of each split (split order).
        flops_fractions: mean test FLOPs of each split, as a fraction of the backbone's FLOPs.
        mean_test_risk: mean of ``test_risks`` (CRC bounds its expectation by ``epsilon``).
        std_test_risk: standard deviation of ``test_risks`` across splits.
        test_risk_quantiles: 10 %, 50 % and 90 % quantiles of ``test_risks``.
        violation_rate: share of splits whose test risk > ``epsilon`` (LTT bounds the
            probability that the true risk exceeds ``epsilon`` by ``delta``).
        mean_flops: mean test FLOPs per sample, averaged over splits.
        mean_flops_fraction: ``mean_flops`` / the backbone's FLOPs.
        qualified_rate: share of splits where some grid point qualified (else the fallback,
            everyone to the last exit, was used).
    """

    test_risks: tuple[float, ...]
    flops_fractions: tuple[float, ...]
    mean_test_risk: float
    std_test_risk: float
    test_risk_quantiles: tuple[float, float, float]
    violation_rate: float
    mean_flops: float
    mean_flops_fraction: float
    qualified_rate: float


@dataclass(frozen=True)
class EpsilonEvidence:
    """CRC, LTT and the best unconstrained grid point at one risk level.

    Attributes:
        epsilon: the risk level.
        crc: Conformal Risk Control's record.
        ltt: Learn-then-Test's record.
        best_flops: mean over splits of the test FLOPs of the cheapest grid point whose *test*
            risk is <= ``epsilon`` (chosen knowing the test part: the reference a guarantee is
            compared against, not a method).
        best_flops_fraction: ``best_flops`` / the backbone's FLOPs.
    """

    epsilon: float
    crc: MethodEvidence
    ltt: MethodEvidence
    best_flops: float
    best_flops_fraction: float


@dataclass(frozen=True)
class RiskEvidence:
    """The outcome of :func:`risk_evidence`.

    Attributes:
        risk: the risk controlled.
        delta: LTT's error level.
        n_splits: number of random calibration/test splits.
        calib_fraction: share of the samples in each calibration part.
        n_calib: calibration samples per split.
        n_test: test samples per split.
        seed: the seed of the splits' generator.
        per_exit: True for a per-exit path, False for a shared grid.
        grid_size: number of grid points (the implicit "nobody leaves early" point not counted).
        backbone_flops: the FLOPs that fractions are relative to.
        points: one record per epsilon, in the order given.
    """

    risk: RiskName
    delta: float
    n_splits: int
    calib_fraction: float
    n_calib: int
    n_test: int
    seed: int
    per_exit: bool
    grid_size: int
    backbone_flops: float
    points: tuple[EpsilonEvidence, ...]


# ------------------------------------------------------------------------------ scores, grids


def default_grid() -> tuple[float, ...]:
    """Shared thresholds for scores in [0, 1] (maximum softmax probabilities), from the most
    conservative (1.0) to the cheapest (0.0): steps of 0.01, plus 0.995, 0.999 and 0.9999.

    It depends on no data, so it keeps CRC's and LTT's guarantees.
    """
    coarse = {round(1.0 - i / 100, 2) for i in range(101)}
    return tuple(sorted(coarse | {0.995, 0.999, 0.9999}, reverse=True))


def quantile_path(tuning_scores: Tensor, levels: Sequence[float] | Tensor | None = None) -> Tensor:
    """A per-exit path built on a *tuning* split: at level ``q``, each side exit's threshold is
    the ``(1 - q)``-quantile of its tuning scores, so a share of about ``q`` of the tuning
    samples passes every exit's test (exits of different confidence get different thresholds).

    Why the guarantees still hold: CRC and LTT need a grid fixed before the calibration data
    are seen. This path is a function of the tuning split alone; given it, the calibration and
    test samples are still exchangeable and each grid point is a fixed rule, so both guarantees
    hold conditionally on the tuning split, hence also unconditionally. The tuning split must
    therefore be disjoint from the calibration (and test) data; a path built from the
    calibration data voids the guarantees. LTT's fixed-sequence test is valid for any fixed
    order; only CRC leans on (approximate) monotonicity along the path.

    Args:
        tuning_scores: ``(E-1, M)`` side-exit scores of the tuning samples (``torch.quantile``
            takes up to 2**24 values).
        levels: increasing shares in [0, 1], the most conservative first; default 101 evenly
            spaced levels from 0 to 1.

    Returns:
        ``(L, E-1)`` float64 thresholds, every column non-increasing (a running minimum down
        the rows removes rounding wiggles of the interpolation).
    """
    if tuning_scores.dim() != 2 or tuning_scores.shape[1] == 0:
        raise ValueError(
            f"tuning_scores must be (E-1, M) with M >= 1, got shape {tuple(tuning_scores.shape)}"
        )
    q = (
        torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
        if levels is None
        else torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
    )
    if q.numel() == 0 or bool(torch.isnan(q).any()) or bool(((q < 0) | (q > 1)).any()):
        raise ValueError(f"levels must be non-empty shares in [0, 1], got {q.tolist()}")
    if bool((q[1:] < q[:-1]).any()):
        raise ValueError(
            "levels must increase (the most conservative level, the smallest share, first); "
            f"got {q.tolist()}; pass sorted(levels)"
        )
    s = tuning_scores.detach().to(torch.float64)
    path = torch.quantile(s, (1.0 - q).to(s.device), dim=1)  # (L, E-1)
    return torch.cummin(path, dim=0).values


# ----------------------------------------------------------------------------- validation


def _check_level(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be in (0, 1) (open interval), got {value!r}")
    return v


def _check_risk(risk: str) -> RiskName:
    if risk not in RISKS:
        raise ValueError(f"unknown risk {risk!r}; expected one of {', '.join(map(repr, RISKS))}")
    return risk  # type: ignore[return-value]


def _check_outputs(scores: Tensor, preds: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Shapes: scores ``(E-1, N)`` floating, preds ``(E, N)`` and labels ``(N,)`` integer."""
    if scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(
            f"scores must be a floating (E-1, N) tensor (one row per side exit), got "
            f"{scores.dtype} of shape {tuple(scores.shape)}"
        )
    side, n = scores.shape
    if side < 1 or n < 1:
        raise ValueError(
            f"scores must have at least one side exit and one sample, got {tuple(scores.shape)}"
        )
    if preds.shape != (side + 1, n) or preds.is_floating_point():
        raise ValueError(
            f"preds must be an integer tensor of shape (E, N) = {(side + 1, n)} (one row per exit, "
            f"the last exit included), got {preds.dtype} of shape {tuple(preds.shape)}"
        )
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(
            f"labels must be an integer tensor of shape (N,) = ({n},), got {labels.dtype} of "
            f"shape {tuple(labels.shape)}"
        )
    dev = scores.device
    return scores.detach(), preds.detach().to(dev), labels.detach().to(dev)


def _resolve_path(
    thresholds: Tensor | Sequence[float] | None, per_exit_path: Tensor | None, side: int
) -> tuple[Tensor, bool]:
    """The grid as a float64 ``(L, E-1)`` path (on the CPU), and whether it is per exit."""
    if thresholds is not None and per_exit_path is not None:
        raise ValueError("give either thresholds (a shared grid) or per_exit_path, not both")
    if per_exit_path is not None:
        path = torch.as_tensor(per_exit_path, dtype=torch.float64).cpu()
        if path.dim() != 2 or path.shape[1] != side or path.shape[0] == 0:
            raise ValueError(
                f"per_exit_path must be (L, E-1) = (L, {side}) with L >= 1, got shape "
                f"{tuple(path.shape)}"
            )
        per_exit = True
    else:
        grid = torch.as_tensor(
            default_grid() if thresholds is None else thresholds, dtype=torch.float64
        ).cpu()
        if grid.dim() != 1 or grid.numel() == 0:
            raise ValueError(
                f"thresholds must be a non-empty 1-D shared grid (L,), got shape "
                f"{tuple(grid.shape)}; give per-exit thresholds as per_exit_path (L, E-1)"
            )
        path = grid.unsqueeze(1).expand(-1, side).contiguous()
        per_exit = False
    if bool(torch.isnan(path).any()):
        raise ValueError("the threshold grid contains NaN")
    bad = (path[1:] > path[:-1]).any(dim=1).nonzero().flatten()
    if bad.numel():
        r = int(bad[0]) + 1
        fix = (
            "make every column non-increasing, e.g. torch.cummin(path, dim=0).values"
            if per_exit
            else "pass sorted(grid, reverse=True)"
        )
        raise ValueError(
            "the threshold grid must run from the most conservative point (high thresholds) to "
            f"the cheapest, non-increasing at every exit; row {r} ({path[r].tolist()}) is above "
            f"row {r - 1} ({path[r - 1].tolist()}); {fix}"
        )
    return path, per_exit


def _check_losses(losses: Tensor) -> Tensor:
    """A 0/1 loss matrix ``(L, N)``, checked, as float64."""
    if losses.dim() != 2 or losses.shape[0] == 0 or losses.shape[1] == 0:
        raise ValueError(f"losses must be (L, N) with L, N >= 1, got shape {tuple(losses.shape)}")
    out = losses.detach().to(torch.float64)
    if bool(((out != 0) & (out != 1)).any()):
        raise ValueError("losses must be 0/1 (bool or 0/1 numbers)")
    return out


# ----------------------------------------------------------------------------- exits, losses


def _exits(scores: Tensor, path: Tensor) -> Tensor:
    """``(L, N)`` int64 exit of each sample at each grid point (as ``simulate`` decides)."""
    side, n = scores.shape
    p = path.to(scores.device, scores.dtype)  # compare in the scores' dtype, as the rule does
    out = torch.full((p.shape[0], n), side, dtype=torch.int64, device=scores.device)
    for i in range(side - 1, -1, -1):  # deep to shallow: the shallowest exit that lets go wins
        leave = scores[i].unsqueeze(0) >= p[:, i].unsqueeze(1)  # (L, N)
        out.masked_fill_(leave, i)
    return out


def sample_losses(early: Tensor, final: Tensor, labels: Tensor, risk: RiskName) -> Tensor:
    """Bool per-sample losses of the predictions ``early`` (made where each sample left; any
    shape ending in ``N``) against the last exit's ``final`` ``(N,)`` and ``labels`` ``(N,)``:
    the risk as the module's docstring defines it."""
    if risk == "disagreement":
        return early != final
    return (final == labels) & (early != labels)


def _losses(exits: Tensor, preds: Tensor, labels: Tensor, risk: RiskName) -> Tensor:
    """``(L, N)`` bool per-sample losses given the exit each sample left at."""
    return sample_losses(preds.gather(0, exits), preds[-1], labels, risk)


def exit_indices(
    scores: Tensor,
    thresholds: Tensor | Sequence[float] | None = None,
    per_exit_path: Tensor | None = None,
) -> Tensor:
    """The exit each sample leaves at, at every grid point.

    Args:
        scores: ``(E-1, N)`` side-exit scores.
        thresholds: shared grid ``(L,)``, non-increasing (default :func:`default_grid`).
        per_exit_path: per-exit grid ``(L, E-1)``, every column non-increasing (instead of
            ``thresholds``).

    Returns:
        ``(L, N)`` int64 exit index in ``0..E-1``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (E-1, N), got shape {tuple(scores.shape)}")
    path, _ = _resolve_path(thresholds, per_exit_path, scores.shape[0])
    return _exits(scores.detach(), path)


def loss_matrix(
    scores: Tensor,
    preds: Tensor,
    labels: Tensor,
    risk: RiskName = "disagreement",
    thresholds: Tensor | Sequence[float] | None = None,
    per_exit_path: Tensor | None = None,
) -> Tensor:
    """Per-sample losses at every grid point.

    Args:
        scores: ``(E-1, N)`` side-exit scores, higher = surer.
        preds: ``(E, N)`` predicted class of every exit.
        labels: ``(N,)`` true classes (read by ``"gap"`` only).
        risk: ``"disagreement"`` or ``"gap"`` (see the module's docstring).
        thresholds: shared grid ``(L,)``, non-increasing (default :func:`default_grid`).
        per_exit_path: per-exit grid ``(L, E-1)`` (instead of ``thresholds``).

    Returns:
        ``(L, N)`` bool losses.
    """
    risk = _check_risk(risk)
    scores, preds, labels = _check_outputs(scores, preds, labels)
    path, _ = _resolve_path(thresholds, per_exit_path, scores.shape[0])
    return _losses(_exits(scores, path), preds, labels, risk)


# ------------------------------------------------------------------------------ the methods


def _binom_log_cdf(n: int, p: float) -> Tensor:
    """``log P(Binomial(n, p) <= k)`` for ``k = 0..n`` (float64, ``(n+1,)``)."""
    k = torch.arange(n + 1, dtype=torch.float64)
    log_pmf = (
        math.lgamma(n + 1)
        - torch.lgamma(k + 1)
        - torch.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    return torch.logcumsumexp(log_pmf, dim=0)


def hb_p_value(risk_hat: Tensor | float, n: int, epsilon: float) -> Tensor:
    """Hoeffding-Bentkus p-value for H0: R > ``epsilon``, given the mean of ``n`` losses in
    [0, 1] (Bates et al. 2021; used by Learn-then-Test, Angelopoulos et al. 2021).

    ``p = min(exp(-n h1(min(R_hat, eps), eps)), e * BinomCDF(ceil(n R_hat); n, eps))`` with
    ``h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))``, capped at 1.

    Shape:
        ``risk_hat`` any shape, values in [0, 1]; the result has its shape (float64). ``n R_hat``
        within a few ulps (of ``risk_hat``'s dtype) above an integer counts as that integer.
    """
    eps = _check_level("epsilon", epsilon)
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = int(n)
    given = torch.as_tensor(risk_hat)
    ulp = torch.finfo(given.dtype if given.is_floating_point() else torch.float64).eps
    r = given.to(torch.float64)
    if bool(((r < 0) | (r > 1) | torch.isnan(r)).any()):
        raise ValueError("risk_hat must lie in [0, 1]")
    a = torch.clamp(r, max=eps)
    h1 = torch.xlogy(a, a / eps) + torch.xlogy(1 - a, (1 - a) / (1 - eps))
    hoeffding = torch.exp(-n * h1)
    # ceil(n R_hat), forgiving the rounding of a mean of 0/1 losses in the dtype it came in
    # (a float32 mean k/n times n can land a few ulps above k)
    k = torch.ceil(n * r - 4 * n * ulp).clamp(0, n).to(torch.int64)
    bentkus = math.e * _binom_log_cdf(n, eps).to(r.device)[k].exp()
    return torch.minimum(hoeffding, bentkus).clamp(max=1.0)


def _prefix_len(ok: Tensor) -> Tensor:
    """Length of the leading run of True along the last dim."""
    return ok.to(torch.int64).cumprod(dim=-1).sum(dim=-1)


def fixed_sequence_test(p_values: Tensor, delta: float) -> int:
    """Fixed-sequence testing: reject ``p_values[0], p_values[1], ...`` while ``p <= delta``,
    stopping at the first non-rejection (controls the family-wise error at ``delta``).

    Returns:
        The index of the last rejected hypothesis, -1 when the first is not rejected.
    """
    d = _check_level("delta", delta)
    if p_values.dim() != 1:
        raise ValueError(f"p_values must be 1-D, got shape {tuple(p_values.shape)}")
    return int(_prefix_len(p_values <= d)) - 1


def _crc_ok(counts: Tensor, n: int, epsilon: Tensor | float) -> Tensor:
    """CRC's condition ``(n/(n+1)) R_n + B/(n+1) <= eps`` with ``B = 1``, in counts:
    ``count + 1 <= eps (n + 1)``."""
    return counts + 1.0 <= epsilon * (n + 1)


def crc_index(losses: Tensor, epsilon: float) -> int:
    """Conformal Risk Control on a 0/1 loss matrix ``(L, N)`` whose rows run from the most
    conservative grid point to the cheapest (Angelopoulos et al. 2022).

    Returns:
        The cheapest row ``l`` such that ``(n/(n+1)) R_n + 1/(n+1) <= epsilon`` holds at ``l``
        and at every row before it; -1 when row 0 fails.
    """
    eps = _check_level("epsilon", epsilon)
    x = _check_losses(losses)
    return int(_prefix_len(_crc_ok(x.sum(dim=1), x.shape[1], eps))) - 1


def ltt_index(losses: Tensor, epsilon: float, delta: float) -> int:
    """Learn-then-Test on a 0/1 loss matrix ``(L, N)`` (rows from the most conservative grid
    point to the cheapest): Hoeffding-Bentkus p-values, fixed-sequence testing at ``delta``.

    Returns:
        The cheapest rejected row (the last of the leading run of rejections); -1 when none.
    """
    eps = _check_level("epsilon", epsilon)
    d = _check_level("delta", delta)
    x = _check_losses(losses)
    n = x.shape[1]
    return fixed_sequence_test(hb_p_value(x.sum(dim=1) / n, n, eps), d)


def _fit(
    method: MethodName,
    scores: Tensor,
    preds: Tensor,
    labels: Tensor,
    epsilon: float,
    delta: float | None,
    risk: str,
    thresholds: Tensor | Sequence[float] | None,
    per_exit_path: Tensor | None,
) -> RiskControlledThresholds:
    eps = _check_level("epsilon", epsilon)
    d = _check_level("delta", delta) if delta is not None else None
    name = _check_risk(risk)
    scores, preds, labels = _check_outputs(scores, preds, labels)
    path, per_exit = _resolve_path(thresholds, per_exit_path, scores.shape[0])
    losses = _losses(_exits(scores, path), preds, labels, name)
    n = losses.shape[1]
    idx = crc_index(losses, eps) if d is None else ltt_index(losses, eps, d)
    if idx >= 0:
        chosen = tuple(float(v) for v in path[idx])
        cal_risk = float(losses[idx].double().mean())
    else:
        chosen, cal_risk = (math.inf,) * scores.shape[0], 0.0
    return RiskControlledThresholds(
        method=method,
        risk=name,
        epsilon=eps,
        delta=d,
        thresholds=chosen,
        calibration_risk=cal_risk,
        n=n,
        qualified=idx >= 0,
        grid_index=idx,
        per_exit=per_exit,
    )


def fit_crc(
    scores: Tensor,
    preds: Tensor,
    labels: Tensor,
    epsilon: float,
    risk: RiskName = "disagreement",
    *,
    thresholds: Tensor | Sequence[float] | None = None,
    per_exit_path: Tensor | None = None,
) -> RiskControlledThresholds:
    """Conformal Risk Control of early exit (Jazbec et al. 2024; Angelopoulos et al. 2022).

    Scans the grid from its conservative end and keeps the cheapest point ``l`` such that
    ``(n/(n+1)) R_n(l') + 1/(n+1) <= epsilon`` for ``l`` and every more conservative ``l'``.
    For losses monotone along the grid this bounds the expected risk of a new sample by
    ``epsilon``. Here the risks are only approximately monotone (an earlier exit is usually,
    not always, more often wrong), as the paper notes, so the bound is approximate.

    Args:
        scores: ``(E-1, N)`` side-exit scores of the calibration samples, higher = surer.
        preds: ``(E, N)`` predictions of every exit.
        labels: ``(N,)`` true classes.
        epsilon: the risk level in (0, 1).
        risk: ``"disagreement"`` or ``"gap"``.
        thresholds: shared grid ``(L,)``, non-increasing (default :func:`default_grid`).
        per_exit_path: per-exit grid ``(L, E-1)`` fixed without the calibration data (e.g.
            :func:`quantile_path` on a tuning split), instead of ``thresholds``.

    Returns:
        The chosen thresholds; with ``qualified=False`` and thresholds ``inf`` when no grid
        point qualifies (then nobody leaves early).
    """
    return _fit("crc", scores, preds, labels, epsilon, None, risk, thresholds, per_exit_path)


def fit_ltt(
    scores: Tensor,
    preds: Tensor,
    labels: Tensor,
    epsilon: float,
    delta: float,
    risk: RiskName = "disagreement",
    *,
    thresholds: Tensor | Sequence[float] | None = None,
    per_exit_path: Tensor | None = None,
) -> RiskControlledThresholds:
    """Learn-then-Test control of early exit (Jazbec et al. 2024; Angelopoulos et al. 2021).

    Tests H0: R(l) > ``epsilon`` at each grid point with the Hoeffding-Bentkus p-value
    (:func:`hb_p_value`), by fixed-sequence testing from the conservative end at level
    ``delta``, and keeps the cheapest rejected point: P(R <= ``epsilon``) >= 1 - ``delta`` over
    the draw of the calibration set. Fixed-sequence testing is valid for any fixed order, so
    this needs no monotonicity. Arguments as :func:`fit_crc`, plus ``delta`` in (0, 1).

    Returns:
        The chosen thresholds; with ``qualified=False`` and thresholds ``inf`` when nothing is
        rejected (then nobody leaves early).
    """
    if delta is None:
        raise ValueError("fit_ltt needs delta in (0, 1)")
    return _fit("ltt", scores, preds, labels, epsilon, delta, risk, thresholds, per_exit_path)


# --------------------------------------------------------------------------------- evidence


def _method_evidence(
    risks: Tensor, flops: Tensor, chosen: Tensor, epsilon: float, backbone: float
) -> MethodEvidence:
    """Summary of one method at one epsilon; ``risks``, ``flops`` and ``chosen`` are ``(S,)``."""
    s = risks.shape[0]
    q = torch.quantile(risks, torch.tensor(_QUANTILES, dtype=torch.float64)).tolist()
    mean_flops = float(flops.mean())
    return MethodEvidence(
        test_risks=tuple(risks.tolist()),
        flops_fractions=tuple((flops / backbone).tolist()),
        mean_test_risk=float(risks.mean()),
        std_test_risk=float(risks.std()) if s > 1 else 0.0,
        test_risk_quantiles=(q[0], q[1], q[2]),
        violation_rate=float((risks > epsilon).double().mean()),
        mean_flops=mean_flops,
        mean_flops_fraction=mean_flops / backbone,
        qualified_rate=float((chosen > 0).double().mean()),
    )


def risk_evidence(
    scores: Tensor,
    preds: Tensor,
    labels: Tensor,
    path_flops: Tensor | Sequence[float],
    epsilons: Sequence[float],
    delta: float,
    n_splits: int = 200,
    calib_fraction: float = 0.5,
    seed: int = 0,
    risk: RiskName = "disagreement",
    per_exit_path: Tensor | None = None,
    *,
    thresholds: Tensor | Sequence[float] | None = None,
    backbone_flops: float | None = None,
) -> RiskEvidence:
    """CRC and LTT over random calibration/test splits: realised test risk and cost.

    For each split, :func:`fit_crc` and :func:`fit_ltt` are applied to the calibration part and
    the chosen thresholds are measured on the test part. Split ``s`` is the ``s``-th
    ``torch.randperm(N, generator=g)`` of ``g = torch.Generator().manual_seed(seed)``; its first
    ``round(calib_fraction * N)`` samples are the calibration part, the rest the test part.
    The loss and exit of every sample at every grid point are computed once; each split is then
    a few index sums (one matrix product over all splits).

    Args:
        scores: ``(E-1, N)`` side-exit scores, higher = surer.
        preds: ``(E, N)`` predictions of every exit.
        labels: ``(N,)`` true classes.
        path_flops: ``(E,)`` FLOPs of leaving at each exit.
        epsilons: risk levels in (0, 1).
        delta: LTT's error level in (0, 1).
        n_splits: number of random splits.
        calib_fraction: share of the samples in each calibration part, in (0, 1).
        seed: seed of the splits' generator (the global RNG is not touched).
        risk: ``"disagreement"`` or ``"gap"``.
        per_exit_path: per-exit grid ``(L, E-1)``, fixed without these samples (see
            :func:`quantile_path`); default: the shared grid ``thresholds``.
        thresholds: shared grid ``(L,)``, non-increasing (default :func:`default_grid`).
        backbone_flops: the FLOPs fractions are relative to (``CostAccount.backbone_flops``);
            default ``path_flops[-1]``, the cost of the last exit's path.
    """
    eps_list = [_check_level("epsilon", e) for e in epsilons]
    if not eps_list:
        raise ValueError("epsilons must hold at least one risk level")
    d = _check_level("delta", delta)
    name = _check_risk(risk)
    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    frac = _check_level("calib_fraction", calib_fraction)
    scores, preds, labels = _check_outputs(scores, preds, labels)
    side, n = scores.shape
    num_exits = side + 1
    pf = torch.as_tensor(path_flops, dtype=torch.float64).cpu()
    if pf.shape != (num_exits,):
        raise ValueError(
            f"path_flops must have one value per exit, shape ({num_exits},), got {tuple(pf.shape)}"
        )
    backbone = float(pf[-1]) if backbone_flops is None else float(backbone_flops)
    if not backbone > 0:
        raise ValueError(f"backbone_flops must be > 0, got {backbone}")
    n_cal = int(round(frac * n))
    n_test = n - n_cal
    if n_cal < 1 or n_test < 1:
        raise ValueError(
            f"calib_fraction={frac} of {n} samples leaves {n_cal} calibration and {n_test} test "
            "samples; both parts need at least one"
        )
    path, per_exit = _resolve_path(thresholds, per_exit_path, side)
    num_points = path.shape[0]

    # per grid point and sample: loss and exit, computed once; then counts per split
    exits = _exits(scores, path)  # (L, N)
    losses = _losses(exits, preds, labels, name).cpu()  # (L, N)
    exits = exits.cpu()
    indicators = torch.cat(
        [losses.unsqueeze(0), exits.unsqueeze(0) == torch.arange(side).view(-1, 1, 1)]
    )
    # sums of 0/1 values below 2**24 are exact in float32 (whatever the order of the additions)
    dtype = torch.float32 if n < 2**24 else torch.float64
    stacked = indicators.reshape(-1, n).to(dtype)  # (E * L, N): losses, then exit == e
    g = torch.Generator().manual_seed(int(seed))
    member = torch.zeros(int(n_splits), n, dtype=dtype)  # (S, N): 1 = calibration
    for s in range(int(n_splits)):
        member[s, torch.randperm(n, generator=g)[:n_cal]] = 1.0
    cal = (member @ stacked.T).round().to(torch.float64).view(-1, num_exits, num_points)
    test = stacked.sum(dim=1, dtype=torch.float64).view(num_exits, num_points) - cal  # (S, E, L)

    def mean_flops(counts: Tensor, size: int) -> Tensor:  # (S, E, L) -> (S, L)
        at_side = counts[:, 1:]  # samples leaving at side exit e
        return (
            (at_side * pf[:-1].view(1, -1, 1)).sum(dim=1) + (size - at_side.sum(dim=1)) * pf[-1]
        ) / size

    s_count = cal.shape[0]
    cal_losses = cal[:, 0]  # (S, L)
    # column 0: the implicit point "nobody leaves early" (zero risk, the last exit's cost)
    test_risk = torch.cat([torch.zeros(s_count, 1, dtype=torch.float64), test[:, 0] / n_test], 1)
    test_flops = torch.cat(
        [torch.full((s_count, 1), float(pf[-1]), dtype=torch.float64), mean_flops(test, n_test)], 1
    )

    eps_t = torch.tensor(eps_list, dtype=torch.float64)  # (P,)
    crc_choice = _prefix_len(_crc_ok(cal_losses.unsqueeze(1), n_cal, eps_t.view(1, -1, 1)))
    r_hat = torch.arange(n_cal + 1, dtype=torch.float64) / n_cal
    reject = torch.stack([hb_p_value(r_hat, n_cal, e) <= d for e in eps_list])  # (P, n_cal+1)
    k = cal_losses.to(torch.int64).unsqueeze(1).expand(-1, len(eps_list), -1)  # (S, P, L)
    rows = torch.arange(len(eps_list)).view(1, -1, 1).expand_as(k)
    ltt_choice = _prefix_len(reject[rows, k])  # (S, P): 0 = fallback, j = grid row j - 1

    ok = test_risk.unsqueeze(1) <= eps_t.view(1, -1, 1)  # (S, P, L + 1)
    best = torch.where(ok, test_flops.unsqueeze(1), math.inf).amin(dim=-1)  # (S, P)

    points = []
    for j, e in enumerate(eps_list):
        records = []
        for choice in (crc_choice[:, j], ltt_choice[:, j]):
            pick = choice.view(-1, 1)
            records.append(
                _method_evidence(
                    test_risk.gather(1, pick).squeeze(1),
                    test_flops.gather(1, pick).squeeze(1),
                    choice,
                    e,
                    backbone,
                )
            )
        best_flops = float(best[:, j].mean())
        points.append(EpsilonEvidence(e, records[0], records[1], best_flops, best_flops / backbone))
    return RiskEvidence(
        risk=name,
        delta=d,
        n_splits=int(n_splits),
        calib_fraction=frac,
        n_calib=n_cal,
        n_test=n_test,
        seed=int(seed),
        per_exit=per_exit,
        grid_size=num_points,
        backbone_flops=backbone,
        points=tuple(points),
    )
