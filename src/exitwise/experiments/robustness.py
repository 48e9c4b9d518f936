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

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from exitwise.experiments.pipeline import write_json
from exitwise.nets import MultiExitNet
from exitwise.policies import Capped, ExitPolicy
from exitwise.routing import collect_outputs, simulate

__all__ = ["Disturbance", "default_disturbances", "perturb", "robustness_study", "slowdown_summary"]


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

    eps = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
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
    """The disturbed batch ``x`` (pixel space [0, 1]) for one disturbance and level."""
    if level == 0:
        return x
    if d.kind == "corruption":
        from exitwise.robustness.corruptions import corrupt

        return corrupt(d.name, x, float(level), torch.Generator().manual_seed(seed))
    from exitwise.robustness import attacks as A

    torch.manual_seed(seed)  # PGD's random start
    target = d.target
    opts: dict[str, Any] = {"target": target}
    if target == "routed":
        opts["threshold"] = policy_threshold
    if d.name == "fgsm":
        atk = A.FGSM(model, eps=level, **opts)
    elif d.name == "bim":
        atk = A.BIM(model, eps=level, alpha=level / 4, steps=10, **opts)
    elif d.name == "pgd":
        atk = A.PGD(model, eps=level, alpha=level / 4, steps=10, random_start=True, **opts)
    elif d.name == "deepfool":
        atk = A.DeepFool(model, max_iter=int(level), **opts)
    elif d.name == "slowdown":
        atk = A.Slowdown(model, eps=level, alpha=level / 4, steps=10)
    else:
        raise ValueError(f"unknown disturbance {d.name!r}")
    return atk(x, y)


def _measure(
    model: MultiExitNet, x: Tensor, y: Tensor, policies: dict[str, ExitPolicy], batch_size: int
) -> dict[str, Any]:
    outputs, _ = collect_outputs(
        model, (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    )
    costs = model.costs
    row: dict[str, Any] = {
        "exit_accuracy": [float((o.logits.argmax(1) == y).double().mean()) for o in outputs],
        "backbone_accuracy": float((outputs[-1].logits.argmax(1) == y).double().mean()),
        "backbone_flops": costs.backbone_flops,
    }
    for name, policy in policies.items():
        res = simulate(outputs, policy, costs)  # == route(model, x, policy), tested
        row[name] = {
            "accuracy": res.accuracy(y),
            "mean_flops": res.mean_flops,
            "flops_fraction": res.mean_flops / costs.backbone_flops,
            "exit_shares": res.exit_shares,
        }
    return row


@dataclass
class StudyState:
    config: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


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
) -> dict[str, Any]:
    """Run every disturbance at every level; return (and save) the study's tables.

    Args:
        model: the trained multi-exit network (put in eval mode).
        images, labels: the evaluation images in [0, 1] and their labels.
        policy: the exit rule whose routed accuracy and FLOPs are reported (``routed``).
        disturbances: what to apply (:func:`default_disturbances`).
        cap_exit: also report ``Capped(policy, cap_exit)`` (the slowdown defence) when given.
        seed: seeds corruptions and random starts (per disturbance and level).
        state_path: JSON file holding finished results; the study resumes from it.
        progress: called with a label after each finished (disturbance, level).
    """
    model.eval()
    policies: dict[str, ExitPolicy] = {"routed": policy}
    if cap_exit is not None:
        policies["capped"] = Capped(policy, cap_exit)
    config = {
        "policy": repr(policy),
        "cap_exit": cap_exit,
        "seed": seed,
        "num_samples": len(labels),
        "disturbances": [asdict(d) for d in disturbances],
    }
    state = StudyState(config)
    path = Path(state_path) if state_path else None
    if path is not None and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config", {}).get("policy") == config["policy"] and saved["config"].get(
            "num_samples"
        ) == len(labels):
            state.results = saved.get("results", {})
    threshold = getattr(policy, "threshold", 0.9)
    threshold = threshold if isinstance(threshold, float) else 0.9
    for di, d in enumerate(disturbances):
        for li, level in enumerate(d.levels):
            key = f"{d.key}@{level:g}"
            if key in state.results:
                if progress is not None:
                    progress(key + " (resumed)")
                continue
            x_dist = torch.cat(
                [
                    perturb(
                        model,
                        d,
                        level,
                        images[i : i + batch_size],
                        labels[i : i + batch_size],
                        seed * 1_000_003 + di * 1_009 + li * 7 + i,
                        threshold,
                    )
                    for i in range(0, len(images), batch_size)
                ]
            )
            row = _measure(model, x_dist.detach(), labels, policies, batch_size)
            row.update({"disturbance": d.key, "name": d.name, "kind": d.kind, "level": level})
            state.results[key] = row
            if path is not None:
                write_json(path, {"config": state.config, "results": state.results})
            if progress is not None:
                progress(key)
    out = {"config": state.config, "results": state.results}
    out["slowdown"] = slowdown_summary(out)
    return out


def slowdown_summary(study: dict[str, Any]) -> list[dict[str, Any]]:
    """How much of the clean FLOPs saving each slowdown epsilon erases, with and without the cap."""
    rows = [r for r in study["results"].values() if r["name"] == "slowdown"]
    rows.sort(key=lambda r: r["level"])
    clean = next((r for r in rows if r["level"] == 0), None)
    if clean is None:
        return []
    out = []
    for r in rows:
        entry: dict[str, Any] = {"eps": r["level"]}
        for name in ("routed", "capped"):
            if name not in r:
                continue
            saving0 = 1 - clean[name]["flops_fraction"]
            saving = 1 - r[name]["flops_fraction"]
            entry[name] = {
                "accuracy": r[name]["accuracy"],
                "flops_fraction": r[name]["flops_fraction"],
                "saving": saving,
                "saving_erased": (saving0 - saving) / saving0 if saving0 > 0 else 0.0,
            }
        out.append(entry)
    return out
