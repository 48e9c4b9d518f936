"""The robustness study of seed 000 (Figs. 5 and 6) and seed 002, for multi-exit networks.

For every disturbance (noise, blur, adversarial attack) and level: the accuracy of each exit, the
routed accuracy under the chosen exit policy, the mean FLOPs actually spent and the share of
samples leaving at each exit; the backbone alone is the final exit at the plain backbone's cost.
The slowdown attack (DeepSloth) is summarised as the share of the FLOPs saving it erases, with and
without a capped-policy defence.

Results are saved after every (disturbance, level) so an interrupted study resumes where it
stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from exitwise.devices import describe_device, module_device
from exitwise.nets import MultiExitNet, eval_mode
from exitwise.outputs import exit_accuracies
from exitwise.policies import Capped, ExitPolicy
from exitwise.results import (
    DisturbanceResult,
    DisturbanceSpec,
    ResultError,
    RobustnessConfig,
    RobustnessResult,
    RoutedPoint,
    SlowdownPoint,
    SlowdownRow,
)
from exitwise.routing import collect_outputs, simulate

__all__ = [
    "Disturbance",
    "default_disturbances",
    "model_fingerprint",
    "perturb",
    "robustness_study",
    "slowdown_summary",
]


@dataclass(frozen=True)
class Disturbance:
    """One axis of the study.

    Attributes:
        name: a corruption (``gaussian_noise``, ``uniform_noise``, ``impulse_noise``,
            ``gaussian_blur``) or an attack (``fgsm``, ``bim``, ``pgd``, ``deepfool``,
            ``slowdown``).
        levels: noise level / blur sigma / attack epsilon (DeepFool: its iteration budget).
        target: for attacks, what is attacked: ``final``, ``all``, ``routed`` or an exit index.
    """

    name: str
    levels: tuple[float, ...]
    target: str | int = "final"

    @property
    def kind(self) -> str:
        return "attack" if self.name in ATTACKS else "corruption"

    @property
    def key(self) -> str:
        return self.name if self.kind == "corruption" else f"{self.name}[{self.target}]"


ATTACKS = ("fgsm", "bim", "pgd", "deepfool", "slowdown")


def default_disturbances(quick: bool = False) -> list[Disturbance]:
    """The seed-000 set: four corruptions, four attacks on the final exit, and the slowdown."""
    from exitwise.robustness.corruptions import LEVEL_GRIDS

    def grid(values: Sequence[float]) -> tuple[float, ...]:
        values = list(values)
        return tuple(values[:: max(len(values) // 4, 1)]) if quick else tuple(values)

    eps: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    eps = eps[::2] if quick else eps
    return [
        Disturbance("gaussian_noise", grid(LEVEL_GRIDS["gaussian_noise"])),
        Disturbance("uniform_noise", grid(LEVEL_GRIDS["uniform_noise"])),
        Disturbance("impulse_noise", grid(LEVEL_GRIDS["impulse_noise"])),
        Disturbance("gaussian_blur", grid(LEVEL_GRIDS["seed002_blur"])),
        Disturbance("fgsm", eps),
        Disturbance("pgd", eps),
        Disturbance("bim", eps),
        Disturbance("deepfool", (0, 1, 2, 3, 5) if quick else (0, 1, 2, 3, 5, 10, 50)),
        Disturbance("slowdown", eps, target="all"),
    ]


def perturb(
    model: MultiExitNet,
    d: Disturbance,
    level: float,
    x: Tensor,
    y: Tensor,
    seed: int,
    policy_threshold: float = 0.9,
) -> Tensor:
    """The disturbed batch ``x`` (pixel space [0, 1]) for one disturbance and level.

    ``seed`` seeds the noise and the attacks' random starts; both are drawn on the CPU (the
    noise is applied there too), so they are the same on every device, and the global RNG is
    not touched.
    """
    if level == 0:
        return x
    if d.kind == "corruption":
        from exitwise.robustness.corruptions import corrupt

        g = torch.Generator().manual_seed(seed)
        return corrupt(d.name, x.cpu(), float(level), g).to(x.device)
    from exitwise.robustness import attacks as A

    target = d.target
    opts: dict[str, Any] = {"target": target}
    if target == "routed":
        opts["threshold"] = policy_threshold
    atk: A.Attack
    if d.name == "fgsm":
        atk = A.FGSM(model, eps=level, **opts)
    elif d.name == "bim":
        atk = A.BIM(model, eps=level, alpha=level / 4, steps=10, **opts)
    elif d.name == "pgd":
        atk = A.PGD(
            model, eps=level, alpha=level / 4, steps=10, random_start=True, seed=seed, **opts
        )
    elif d.name == "deepfool":
        atk = A.DeepFool(model, max_iter=int(level), **opts)
    elif d.name == "slowdown":
        atk = A.Slowdown(model, eps=level, alpha=level / 4, steps=10, seed=seed)
    else:
        raise ValueError(f"unknown disturbance {d.name!r}")
    return atk(x, y)


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the model's weights and buffers: a saved study is only resumed for the
    very same model."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _measure(
    model: MultiExitNet,
    batches: Iterable[Tensor],
    shape: Sequence[int],
    y: Tensor,
    policies: dict[str, ExitPolicy],
    d: Disturbance,
    level: float,
) -> DisturbanceResult:
    """Route the disturbed ``batches`` (images of ``shape``, on the model's device) once, and
    score every policy on their outputs against ``y`` (on the CPU)."""
    outputs, _ = collect_outputs(model, batches)
    costs = model.costs_at(shape)
    exit_accuracy = exit_accuracies(outputs, y)
    points = {}
    for name, policy in policies.items():
        res = simulate(outputs, policy, costs)  # == route(model, x, policy), tested
        points[name] = RoutedPoint(
            res.accuracy(y),
            res.mean_flops,
            res.mean_flops / costs.backbone_flops,
            tuple(res.exit_shares),
        )
    return DisturbanceResult(
        disturbance=d.key,
        name=d.name,
        kind="attack" if d.kind == "attack" else "corruption",
        level=float(level),
        exit_accuracy=exit_accuracy,
        backbone_accuracy=exit_accuracy[-1],
        backbone_flops=costs.backbone_flops,
        routed=points["routed"],
        capped=points.get("capped"),
    )


def _resumable(path: Path | None, config: RobustnessConfig) -> dict[str, DisturbanceResult]:
    """The finished results saved at ``path`` if its whole configuration equals ``config``."""
    if path is None or not path.exists():
        return {}
    try:
        saved = RobustnessResult.load(path)
    except ResultError:
        return {}  # another format or damaged: start afresh (it is overwritten as we go)
    return dict(saved.results) if saved.config == config else {}


def robustness_study(
    model: MultiExitNet,
    images: Tensor,
    labels: Tensor,
    policy: ExitPolicy,
    disturbances: Sequence[Disturbance],
    cap_exit: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    state_path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    dataset: str = "",
    device: torch.device | str | None = None,
) -> RobustnessResult:
    """Run every disturbance at every level; return (and save) the study's tables.

    Args:
        model: the trained multi-exit network (run in eval mode; every submodule's mode is
            restored afterwards, also when the study raises).
        images, labels: the evaluation images in [0, 1] and their labels.
        policy: the exit rule whose routed accuracy and FLOPs are reported (``routed``).
        disturbances: what to apply (:func:`default_disturbances`).
        cap_exit: also report ``Capped(policy, cap_exit)`` (the slowdown defence) when given.
        seed: seeds corruptions and random starts (per disturbance and level).
        batch_size: images per forward pass (and per attack batch).
        state_path: JSON file holding finished results; the study resumes from it when its whole
            configuration (policy, cap, seed, samples, batch size, disturbances, model weights,
            dataset) is the same, and starts afresh otherwise.
        progress: called with a label after each finished (disturbance, level).
        dataset: the dataset's name, recorded with the configuration.
        device: where to run (the model is moved there); default: where the model is. Images
            and labels may be on the CPU: each batch is moved there (after a corruption, which
            is applied on the CPU), attacked and routed there, and only its outputs come back to
            the CPU. The device is recorded with the configuration.
    """
    if device is not None:
        model.to(device)
    dev = module_device(model)
    policies: dict[str, ExitPolicy] = {"routed": policy}
    if cap_exit is not None:
        policies["capped"] = Capped(policy, cap_exit)
    config = RobustnessConfig(
        policy=repr(policy),
        cap_exit=cap_exit,
        seed=seed,
        num_samples=len(labels),
        batch_size=batch_size,
        disturbances=[DisturbanceSpec(d.name, tuple(d.levels), d.target) for d in disturbances],
        model=model_fingerprint(model),
        dataset=dataset,
        device=describe_device(dev),
    )
    path = Path(state_path) if state_path else None
    study = RobustnessResult(config, _resumable(path, config))
    threshold = getattr(policy, "threshold", 0.9)
    threshold = threshold if isinstance(threshold, float) else 0.9
    y = labels.cpu()
    with eval_mode(model):
        for di, d in enumerate(disturbances):
            for li, level in enumerate(d.levels):
                key = f"{d.key}@{level:g}"
                if key in study.results:
                    if progress is not None:
                        progress(key + " (resumed)")
                    continue
                # An attack runs on the model's device, a corruption on the CPU (where its noise
                # is drawn); either batch is then routed on the device: only outputs come back.
                at = dev if d.kind == "attack" else torch.device("cpu")
                disturbed = (
                    perturb(
                        model,
                        d,
                        level,
                        images[i : i + batch_size].to(at),
                        labels[i : i + batch_size].to(at),
                        seed * 1_000_003 + di * 1_009 + li * 7 + i,
                        threshold,
                    ).detach()
                    for i in range(0, len(images), batch_size)
                )
                study.results[key] = _measure(
                    model, disturbed, images.shape[1:], y, policies, d, level
                )
                if path is not None:
                    study.save(path)
                if progress is not None:
                    progress(key)
    study.slowdown = slowdown_summary(study)
    return study


def _slowdown_point(clean: RoutedPoint, r: RoutedPoint) -> SlowdownPoint:
    saving0 = 1 - clean.flops_fraction
    saving = 1 - r.flops_fraction
    erased = (saving0 - saving) / saving0 if saving0 > 0 else 0.0
    return SlowdownPoint(r.accuracy, r.flops_fraction, saving, erased)


def slowdown_summary(study: RobustnessResult) -> list[SlowdownRow]:
    """How much of the clean FLOPs saving each slowdown epsilon erases, with and without the cap."""
    rows = sorted(
        (r for r in study.results.values() if r.name == "slowdown"), key=lambda r: r.level
    )
    clean = next((r for r in rows if r.level == 0), None)
    if clean is None:
        return []
    return [
        SlowdownRow(
            r.level,
            _slowdown_point(clean.routed, r.routed),
            _slowdown_point(clean.capped, r.capped) if clean.capped and r.capped else None,
        )
        for r in rows
    ]


# ------------------------------------------------------------------------- the study of a run


@dataclass
class RobustnessPlan:
    """A checked robustness study of a trained run, ready to run (see :func:`plan_robustness`).

    Attributes:
        run_dir: the trained run.
        model: its network (eval mode).
        policy: the routed model's exit rule.
        threshold_source: where the threshold came from, for people.
        disturbances: what is applied.
        samples: how many test images (a seeded random subset).
        cap_exit: the capped defence's exit.
        seed: seeds the subset, the noise and random starts.
        out_dir: ``run_dir/robustness``.
    """

    run_dir: Path
    model: MultiExitNet
    policy: ExitPolicy
    threshold_source: str
    disturbances: list[Disturbance]
    samples: int
    cap_exit: int
    seed: int
    out_dir: Path

    @property
    def total(self) -> int:
        """(disturbance, level) pairs to measure."""
        return sum(len(d.levels) for d in self.disturbances)


def plan_robustness(
    run_dir: str | Path,
    samples: int = 500,
    threshold: float | None = None,
    cap_exit: int = 1,
    quick: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> RobustnessPlan:
    """Check every option and file of a robustness study of ``run_dir`` before any data loads.

    The max-probability threshold defaults to the one chosen on validation in the run's
    ``evaluation.json``, else 0.9. The model is loaded onto ``device`` (default: the CPU), where
    the study runs.

    Raises:
        InputError: a bad option or file, with a one-line message.
    """
    from exitwise.errors import InputError
    from exitwise.policies import MaxProbability
    from exitwise.results import EfficiencyResult
    from exitwise.training import load_model

    run_dir = Path(run_dir)
    if samples < 1:
        raise InputError(f"--samples must be a positive number of test images, got {samples}")
    if threshold is not None and not 0 <= threshold <= 1.01:
        raise InputError(f"--threshold is a max-probability in [0, 1], got {threshold}")
    if (run_dir / "robustness").exists() and not (run_dir / "robustness").is_dir():
        raise InputError(f"{run_dir / 'robustness'} is a file; expected the study's folder")
    model = load_model(run_dir, device=device).model
    if not 0 <= cap_exit < model.num_exits - 1:
        raise InputError(
            f"--cap-exit must be a side exit in 0..{model.num_exits - 2} of this "
            f"{model.num_exits}-exit model, got {cap_exit}"
        )
    source = "given"
    if threshold is None:
        threshold, source = 0.9, "default 0.9 (no evaluation.json)"
        ev_path = run_dir / "evaluation.json"
        if ev_path.exists():
            chosen = EfficiencyResult.load(ev_path).policies.get("max_probability")
            if chosen is not None and chosen.chosen is not None:
                threshold, source = chosen.chosen.threshold, "chosen on validation"
    return RobustnessPlan(
        run_dir=run_dir,
        model=model,
        policy=MaxProbability(threshold),
        threshold_source=source,
        disturbances=default_disturbances(quick),
        samples=samples,
        cap_exit=cap_exit,
        seed=seed,
        out_dir=run_dir / "robustness",
    )


def run_robustness(
    plan: RobustnessPlan,
    images: Tensor,
    labels: Tensor,
    dataset: str,
    title: str,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> RobustnessResult:
    """Run ``plan`` on a seeded subset of ``images`` (uint8 or float in [0, 1]) and save the
    study as ``plan.out_dir/study.json`` (resumable)."""
    g = torch.Generator().manual_seed(plan.seed)
    idx = torch.randperm(len(labels), generator=g)[: min(plan.samples, len(labels))]
    x = images[idx]
    x = x.float() / 255 if not x.is_floating_point() else x.float()
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    study = robustness_study(
        plan.model,
        x,
        labels[idx],
        plan.policy,
        plan.disturbances,
        cap_exit=plan.cap_exit,
        seed=plan.seed,
        state_path=plan.out_dir / "study.json",
        progress=progress,
        dataset=dataset,
    )
    study.title, study.command = title, command
    study.save(plan.out_dir / "study.json")
    return study
