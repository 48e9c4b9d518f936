"""The risk-control study of a trained run (issue 11, floor 5), after Jazbec et al. 2024,
"Fast yet Safe: Early-Exiting with Risk Control".

Exit thresholds with distribution-free guarantees: Conformal Risk Control bounds the expected
risk by epsilon, Learn-then-Test guarantees P(risk <= epsilon) >= 1 - delta. Two risks: the
early exit disagrees with the final exit (``disagreement``), or the final exit is right and the
early exit wrong (``gap``). Two rule families: one threshold shared by every side exit, and
per-exit thresholds along a path searched on data the guarantee is not measured on.

What the study reports:

* ``fitted``: rules calibrated on the validation split at the user's epsilon and delta, measured
  on the test split (on GTSRB, whose validation tracks are easier than its test set, this shows
  what each guarantee delivers across that shift);
* ``recalibrated``: the same rules calibrated on a random half of the test split and measured on
  the other half (what closes the gap: calibrating on the deployment distribution);
* ``evidence``: over many random calibration/test splits of the test split (held-out data),
  CRC's mean test risk and LTT's violation frequency against epsilon and delta, and what each
  costs in FLOPs against the best unconstrained threshold;
* ``shift``: rules calibrated on clean validation images applied to blurred and noisy test
  images, against the same rules recalibrated on the disturbed images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from exitwise.calibration import (
    fit_crc,
    fit_ltt,
    fit_temperatures,
    max_probability_scores,
    quantile_path,
    risk_evidence,
)
from exitwise.calibration.risk import (
    METHODS,
    RISKS,
    MethodName,
    RiskControlledThresholds,
    RiskName,
    sample_losses,
)
from exitwise.calibration.risk import RiskEvidence as SplitsEvidence
from exitwise.calibration.thresholds import NEVER
from exitwise.cost import CostAccount
from exitwise.data import ArrayDataset, DatasetSplits, iterate_batches
from exitwise.devices import module_device
from exitwise.errors import InputError
from exitwise.experiments.calibration import saved_calibration
from exitwise.nets import MultiExitNet
from exitwise.outputs import ExitOutput, take_rows
from exitwise.policies import MaxProbability
from exitwise.results import (
    EvidenceRow,
    RiskConfig,
    RiskEvidence,
    RiskFitResult,
    RiskResult,
    ShiftRow,
)
from exitwise.routing import collect_outputs, simulate

__all__ = [
    "RISKS",
    "RULES",
    "METHODS",
    "DEFAULT_EPSILONS",
    "SHIFTS",
    "RiskSettings",
    "risk_study",
    "run_risk",
    "per_exit_path",
    "fitted_policy",
]

Rule = Literal["shared", "per_exit"]
RULES: tuple[Rule, ...] = ("shared", "per_exit")
DEFAULT_EPSILONS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
SHIFTS: tuple[tuple[str, float], ...] = (
    ("gaussian_blur", 0.5),
    ("gaussian_blur", 1.0),
    ("gaussian_blur", 1.5),
    ("gaussian_noise", 0.05),
    ("gaussian_noise", 0.1),
)
"""Disturbances of the shift check: seed 002's blur sigmas and two noise levels."""
SHIFT_RISK: RiskName = "disagreement"
"""The risk of the shift check (with shared thresholds)."""


@dataclass(frozen=True)
class RiskSettings:
    """What the user asks for, and how hard the study checks it."""

    epsilon: float = 0.02
    delta: float = 0.1
    method: MethodName = "ltt"
    rule: Rule = "shared"
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    splits: int = 200
    calib_fraction: float = 0.5
    seed: int = 0
    shift_samples: int = 2000
    batch_size: int = 512

    def check(self) -> None:
        """One-line ``InputError`` for anything out of range."""
        for name, value in (("--epsilon", self.epsilon), ("--delta", self.delta)):
            if not 0 < value < 1:
                raise InputError(f"{name} must be in (0, 1), got {value}")
        if self.method not in METHODS:
            raise InputError(f"--method must be crc or ltt, got {self.method!r}")
        if self.rule not in RULES:
            raise InputError(f"--rule must be shared or per_exit, got {self.rule!r}")
        if self.splits < 1:
            raise InputError(f"--splits must be >= 1, got {self.splits}")
        if not 0 < self.calib_fraction < 1:
            raise InputError(
                f"the calibration fraction must be in (0, 1), got {self.calib_fraction}"
            )
        if self.shift_samples < 0:
            raise InputError(f"--shift-samples must be >= 0, got {self.shift_samples}")
        if not self.epsilons or any(not 0 < e < 1 for e in self.epsilons):
            raise InputError(f"every epsilon must be in (0, 1), got {list(self.epsilons)}")


@dataclass(frozen=True)
class _Split:
    """Scores, predictions and labels of one set of images, under the run's temperatures."""

    outputs: list[ExitOutput]
    scores: Tensor  # (E-1, N)
    preds: Tensor  # (E, N)
    labels: Tensor  # (N,)

    def take(self, idx: Tensor) -> _Split:
        outs = [take_rows(o, idx) for o in self.outputs]
        return _Split(outs, self.scores[:, idx], self.preds[:, idx], self.labels[idx])


def _split(outputs: list[ExitOutput], labels: Tensor, temps: Sequence[float]) -> _Split:
    scores, preds = max_probability_scores(outputs, temps)
    return _Split(outputs, scores, preds, labels)


def _halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2], perm[n // 2 :]


def per_exit_path(data: _Split) -> Tensor:
    """Per-exit thresholds from the most conservative to the cheapest: at level q every side
    exit's threshold is the (1 - q) quantile of its own scores on ``data`` (each exit lets the
    same share through; :func:`exitwise.calibration.risk.quantile_path`). ``data`` must be
    disjoint from the data a guarantee is calibrated on, so that the path is a fixed sequence
    of rules for CRC and LTT. It reads scores only, not labels: a greedy path searched on
    validation labels (lowering, step by step, the exit that saves the most FLOPs per unit of
    risk) and the per-exit search's accuracy front both cost more FLOPs on test than this at
    equal risk (synthetic-signs, eps 1-5%), as they fit the validation split's noise."""
    return quantile_path(data.scores)


def _fit(
    method: MethodName,
    data: _Split,
    epsilon: float,
    delta: float,
    risk: RiskName,
    path: Tensor | None,
) -> RiskControlledThresholds:
    outputs = data.scores, data.preds, data.labels
    if method == "crc":
        return fit_crc(*outputs, epsilon, risk, per_exit_path=path)
    return fit_ltt(*outputs, epsilon, delta, risk, per_exit_path=path)


def _measure(
    fit: RiskControlledThresholds,
    data: _Split,
    temps: Sequence[float],
    costs: CostAccount,
    risk: RiskName,
) -> tuple[float, float, float]:
    """Realised risk, FLOPs fraction and accuracy of the fitted rule on ``data``, by routing
    its outputs through the live rule (``simulate`` makes what ``route`` makes)."""
    res = simulate(data.outputs, fit.policy(list(temps)), costs)
    losses = sample_losses(res.prediction, data.preds[-1], data.labels, risk)
    return (
        float(losses.double().mean()),
        res.mean_flops / costs.backbone_flops,
        res.accuracy(data.labels),
    )


def _thresholds(fit: RiskControlledThresholds) -> tuple[float, ...]:
    return tuple(t if math.isfinite(t) else NEVER for t in fit.thresholds)


def _fit_result(
    fit: RiskControlledThresholds,
    rule: Rule,
    measured: tuple[float, float, float],
    calibrated_on: str,
    measured_on: str,
) -> RiskFitResult:
    risk, fraction, acc = measured
    return RiskFitResult(
        method=fit.method,
        risk=fit.risk,
        rule=rule,
        epsilon=fit.epsilon,
        delta=fit.delta,
        thresholds=_thresholds(fit),
        qualified=fit.qualified,
        calib_risk=float(fit.calibration_risk),
        calib_samples=fit.n,
        test_risk=risk,
        test_flops_fraction=fraction,
        test_accuracy=acc,
        calibrated_on=calibrated_on,
        measured_on=measured_on,
    )


def _evidence_rows(ev: SplitsEvidence) -> list[EvidenceRow]:
    rows = []
    for p in ev.points:
        crc, ltt = p.crc, p.ltt
        rows.append(
            EvidenceRow(
                epsilon=p.epsilon,
                crc_mean_risk=crc.mean_test_risk,
                crc_risk_p10=crc.test_risk_quantiles[0],
                crc_risk_p90=crc.test_risk_quantiles[2],
                crc_flops_fraction=crc.mean_flops_fraction,
                ltt_violation_rate=ltt.violation_rate,
                ltt_mean_risk=ltt.mean_test_risk,
                ltt_flops_fraction=ltt.mean_flops_fraction,
                best_flops_fraction=p.best_flops_fraction,
            )
        )
    return rows


def _outputs(model: MultiExitNet, images: Tensor, batch_size: int) -> list[ExitOutput]:
    """The exit outputs of ``images`` (``collect_outputs`` moves each batch to the model)."""
    batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    return collect_outputs(model, batches)[0]


def risk_study(
    model: MultiExitNet,
    data: DatasetSplits,
    temperatures: Sequence[float] | None,
    settings: RiskSettings,
    title: str = "",
    progress: Callable[[str], None] | None = None,
) -> RiskResult:
    """Fit, measure and stress risk-controlling exit rules of ``model`` (see the module doc).

    Args:
        model: the trained network (its mode is kept; outputs are computed in eval mode).
        data: the run's dataset; thresholds are calibrated on ``data.val``, measured on
            ``data.test``.
        temperatures: one per exit, fitted on validation (the run's calibration); ``None``:
            fitted here by NLL on the validation outputs, as ``exitwise evaluate`` does.
        settings: the user's epsilon, delta, method and rule, and the evidence's extent.
        progress: called with a label after each step.
    """
    settings.check()
    if len(data.val) == 0:
        raise InputError("the risk study calibrates on the validation split, and it is empty")
    say = progress or (lambda _s: None)
    costs = model.costs_at(data.input_shape)
    path_flops = costs.path_flops

    def collect(split: ArrayDataset) -> tuple[list[ExitOutput], Tensor]:
        batches = iterate_batches(split, settings.batch_size, device=module_device(model))
        outs, labels = collect_outputs(model, batches)
        assert labels is not None
        return outs, labels

    val_out, val_y = collect(data.val)
    test_out, test_y = collect(data.test)
    temps = list(temperatures) if temperatures is not None else fit_temperatures(val_out, val_y)
    val, test = _split(val_out, val_y, temps), _split(test_out, test_y, temps)
    say("outputs")
    tune_idx, cal_idx = _halves(len(val.labels), settings.seed)
    half_a, half_b = _halves(len(test.labels), settings.seed + 1)
    test_a, test_b = test.take(half_a), test.take(half_b)
    # per-exit paths (they read scores, not the risk): for the evidence and the recalibration on
    # test, from all of validation; for the validation fits, from one half of it, calibrated on
    # the other half
    paths: dict[str, tuple[Tensor | None, Tensor | None]] = {
        "shared": (None, None),
        "per_exit": (per_exit_path(val), per_exit_path(val.take(tune_idx))),
    }
    fitted, recalibrated = [], []
    on_val: dict[tuple[Rule, RiskName, MethodName], RiskControlledThresholds] = {}
    for rule in RULES:
        val_cal = val.take(cal_idx) if rule == "per_exit" else val
        path_all, path_tune = paths[rule]
        for risk in RISKS:
            for method in METHODS:
                fit = _fit(method, val_cal, settings.epsilon, settings.delta, risk, path_tune)
                on_val[rule, risk, method] = fit
                fitted.append(
                    _fit_result(
                        fit, rule, _measure(fit, test, temps, costs, risk), "validation", "test"
                    )
                )
                refit = _fit(method, test_a, settings.epsilon, settings.delta, risk, path_all)
                recalibrated.append(
                    _fit_result(
                        refit,
                        rule,
                        _measure(refit, test_b, temps, costs, risk),
                        "half of test",
                        "the other half of test",
                    )
                )
        say(f"fitted ({rule})")
    evidence = []
    for rule in RULES:
        for risk in RISKS:
            ev = risk_evidence(
                test.scores,
                test.preds,
                test.labels,
                path_flops,
                settings.epsilons,
                settings.delta,
                n_splits=settings.splits,
                calib_fraction=settings.calib_fraction,
                seed=settings.seed,
                risk=risk,
                per_exit_path=paths[rule][0],
                backbone_flops=costs.backbone_flops,
            )
            evidence.append(
                RiskEvidence(
                    risk, rule, settings.delta, settings.splits, settings.calib_fraction,
                    _evidence_rows(ev),
                )
            )  # fmt: skip
            say(f"evidence ({rule}, {risk})")
    clean_fits = {m: on_val["shared", SHIFT_RISK, m] for m in METHODS}
    shift = _shift_rows(model, data, clean_fits, temps, costs, settings, say)
    config = RiskConfig(
        epsilons=list(settings.epsilons),
        delta=settings.delta,
        risks=list(RISKS),
        splits=settings.splits,
        calib_fraction=settings.calib_fraction,
        seed=settings.seed,
        temperatures=temps,
        user_epsilon=settings.epsilon,
        user_method=settings.method,
        user_rule=settings.rule,
    )
    return RiskResult(
        title=title, config=config, fitted=fitted, evidence=evidence, shift=shift,
        recalibrated=recalibrated,
    )  # fmt: skip


def _shift_rows(
    model: MultiExitNet,
    data: DatasetSplits,
    clean_fits: dict[MethodName, RiskControlledThresholds],
    temps: list[float],
    costs: CostAccount,
    settings: RiskSettings,
    say: Callable[[str], None],
) -> list[ShiftRow]:
    """The :data:`SHIFT_RISK` with shared thresholds, calibrated on clean validation images
    (``clean_fits``, per method: the study's own fits) and applied to disturbed test images,
    against recalibrating on disturbed images."""
    from exitwise.robustness.corruptions import corrupt

    if settings.shift_samples == 0:
        return []
    n = min(settings.shift_samples, len(data.test))
    idx = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(settings.seed))[:n]
    clean = data.test.images[idx].float() / 255
    labels = data.test.labels[idx]
    risk = SHIFT_RISK
    half_a, half_b = _halves(n, settings.seed + 2)
    rows = []
    for name, level in SHIFTS:
        gen = torch.Generator().manual_seed(settings.seed * 7919 + int(level * 1000))
        x = corrupt(name, clean, level, gen)
        shifted = _split(_outputs(model, x, settings.batch_size), labels, temps)
        for method in METHODS:
            c_risk, c_flops, _ = _measure(clean_fits[method], shifted, temps, costs, risk)
            refit = _fit(method, shifted.take(half_a), settings.epsilon, settings.delta, risk, None)
            r_risk, r_flops, _ = _measure(refit, shifted.take(half_b), temps, costs, risk)
            rows.append(
                ShiftRow(
                    disturbance=name,
                    level=level,
                    method=method,
                    clean_calibrated_risk=c_risk,
                    clean_calibrated_flops_fraction=c_flops,
                    recalibrated_risk=r_risk,
                    recalibrated_flops_fraction=r_flops,
                    final_exit_accuracy=float((shifted.preds[-1] == labels).double().mean()),
                    risk=risk,
                    rule="shared",
                    epsilon=settings.epsilon,
                )
            )
        say(f"shift {name} {level:g}")
    return rows


def run_risk(
    run_dir: str | Path,
    model: MultiExitNet,
    data: DatasetSplits,
    settings: RiskSettings,
    title: str,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> RiskResult:
    """The risk study of a saved run, saved as ``run_dir/risk/risk.json``."""
    run_dir = Path(run_dir)
    settings.check()
    saved = saved_calibration(run_dir, model.num_exits)
    temps = saved.temperatures if saved is not None else None
    result = risk_study(model, data, temps, settings, title, progress)
    result.command = command
    out = run_dir / "risk"
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "risk.json")
    return result


def fitted_policy(run_dir: str | Path) -> MaxProbability:
    """The rule ``exitwise risk`` fitted on a run for the user's setting (method, risk rule
    family, epsilon, delta; the disagreement risk), calibrated on validation: an ordinary
    ``MaxProbability`` with the run's temperatures, ready for ``route``."""
    result = RiskResult.load(Path(run_dir) / "risk" / "risk.json")
    c = result.config
    for fit in result.fitted:
        if (fit.method, fit.rule, fit.risk, fit.epsilon) == (
            c.user_method,
            c.user_rule,
            "disagreement",
            c.user_epsilon,
        ):
            return MaxProbability(list(fit.thresholds), temperature=c.temperatures)
    raise InputError(f"{run_dir}/risk/risk.json holds no rule for its own setting")
