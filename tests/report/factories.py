"""Small typed results for the report tests, built directly (no model, no data).

``efficiency_result``: 4 exits, two policies (one with a chosen point), a training history.
``robustness_result``: 2 corruptions, 2 attacks and the slowdown, with the capped policy.
``comparison_result``: two runs against a plain reference, at two budgets and at the goal.
"""

from __future__ import annotations

from exitwise.results import (
    BackboneResult,
    ChosenPoint,
    ComparedPoint,
    ComparisonResult,
    CostSummary,
    CurvePoint,
    DatasetInfo,
    DisturbanceResult,
    DisturbanceSpec,
    EfficiencyResult,
    ExitResult,
    ModelInfo,
    OperatingPoint,
    OracleResult,
    PolicyResult,
    ReferenceInfo,
    RobustnessConfig,
    RobustnessResult,
    RoutedPoint,
    RunCurves,
    SlowdownPoint,
    SlowdownRow,
    TrainingInfo,
)

STAGE_FLOPS = [310_378_496, 268_435_456, 268_435_456, 263_585_792]
EXIT_FLOPS = [14_030_208, 7_012_352, 3_508_224, 22_016]
EXIT_ACCURACY = [0.713, 0.862, 0.951, 0.9853]
BLOCKS = ["layer1.1", "layer2.1", "layer3.1", "final"]
BACKBONE_FLOPS = sum(STAGE_FLOPS) + EXIT_FLOPS[-1]  # 1,110,857,216
PATH_FLOPS = [sum(STAGE_FLOPS[: i + 1]) + sum(EXIT_FLOPS[: i + 1]) for i in range(4)]
PATH_FRACTION = [p / BACKBONE_FLOPS for p in PATH_FLOPS]
MP_THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
ENT_THRESHOLDS = [2.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05]
CHOSEN_INDEX = 6  # max_probability's chosen threshold: 0.98


def _shares(strictness: float) -> tuple[float, ...]:
    """Stricter thresholds push images to deeper exits."""
    raw = [
        (1 - strictness) ** 1.5 * 0.9 + 0.02,
        0.25 * strictness + 0.03,
        0.3 * strictness**2 + 0.02,
        0.4 * strictness**3 + 0.01,
    ]
    return tuple(r / sum(raw) for r in raw)


def _point(threshold: float, strictness: float) -> OperatingPoint:
    shares = _shares(strictness)
    mean_flops = sum(s * p for s, p in zip(shares, PATH_FLOPS, strict=True))
    accuracy = round(0.9853 - 0.17 * (1 - strictness) ** 2.2 + 0.002 * strictness, 6)
    return OperatingPoint(threshold, accuracy, mean_flops, mean_flops / BACKBONE_FLOPS, shares)


def pareto(points: list[OperatingPoint]) -> list[OperatingPoint]:
    front: list[OperatingPoint] = []
    for p in sorted(points, key=lambda q: (q.mean_flops, -q.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def policy(label: str, thresholds: list[float], strictness: list[float]) -> PolicyResult:
    sweep = [_point(t, s) for t, s in zip(thresholds, strictness, strict=True)]
    return PolicyResult(label=label, sweep=sweep, pareto=pareto(sweep))


def efficiency_result(title: str = "BranchyResNet18 on synthetic-signs") -> EfficiencyResult:
    strict = [i / 9 for i in range(10)]
    mp = policy("max softmax probability >= t", MP_THRESHOLDS, strict)
    at = mp.sweep[CHOSEN_INDEX]
    mp.chosen = ChosenPoint(
        at.threshold, at.accuracy, at.mean_flops, at.flops_fraction, at.exit_shares,
        val_accuracy=0.9801,
        rule="best val accuracy within 0.5 points of the final exit at the lowest FLOPs",
    )  # fmt: skip
    policies = {
        "max_probability": mp,
        "entropy": policy("softmax entropy (nats) <= t", ENT_THRESHOLDS, [s**0.8 for s in strict]),
    }
    oracle_shares = (0.713, 0.149, 0.089, 0.049)
    oracle_flops = sum(s * p for s, p in zip(oracle_shares, PATH_FLOPS, strict=True))
    history = [
        {"epoch": e, "train_loss": 4.0 / e, "seconds": 51.2,
         "val_accuracy": [a * (1 - 0.5 / e) for a in EXIT_ACCURACY]}
        for e in range(1, 11)
    ]  # fmt: skip
    return EfficiencyResult(
        title=title,
        dataset=DatasetInfo("synthetic-signs", num_samples=2580, num_classes=43),
        model=ModelInfo("branchy_resnet18", "resnet18", 4, BLOCKS, 11_500_000),
        costs=CostSummary(
            input_shape=[3, 32, 32],
            stage_flops=STAGE_FLOPS,
            exit_flops=EXIT_FLOPS,
            path_flops=PATH_FLOPS,
            path_macs=[p // 2 for p in PATH_FLOPS],
            backbone_flops=BACKBONE_FLOPS,
            backbone_macs=BACKBONE_FLOPS // 2,
        ),
        exits=[
            ExitResult(i, b, a, p, f)
            for i, (b, a, p, f) in enumerate(
                zip(BLOCKS, EXIT_ACCURACY, PATH_FLOPS, PATH_FRACTION, strict=True)
            )
        ],
        backbone=BackboneResult(accuracy=0.9853, flops=BACKBONE_FLOPS, val_accuracy=0.9812),
        oracle=OracleResult(0.9934, oracle_flops, oracle_flops / BACKBONE_FLOPS, oracle_shares),
        policies=policies,
        training=TrainingInfo(512.3, 10, "cpu", "2-core x86_64", threads=2, history=history),
        command="exitwise run configs/branchy_resnet18.yaml --out runs/r18",
        notes=["Synthetic data: numbers are illustrative.", "Thresholds picked on val."],
    )


# ------------------------------------------------------------------------------------ robustness

CAP_EXIT = 1
ATTACKS = ("fgsm", "bim", "pgd", "deepfool", "slowdown")
DISTURBANCES = [  # (name, target, levels, how hard the strongest level hits)
    ("gaussian_noise", None, [0.0, 0.05, 0.1, 0.2], 0.9),
    ("impulse_noise", None, [0.0, 0.02, 0.05, 0.1], 0.7),
    ("fgsm", "final", [0.0, 2 / 255, 8 / 255], 1.0),
    ("deepfool", "final", [0, 3, 10], 1.0),
    ("slowdown", "all", [0.0, 4 / 255, 8 / 255], 0.3),
]


def _routed(shares: list[float], accuracy: float) -> RoutedPoint:
    fraction = sum(s * f for s, f in zip(shares, PATH_FRACTION, strict=True))
    return RoutedPoint(accuracy, fraction * BACKBONE_FLOPS, fraction, tuple(shares))


def _disturbed(name: str, target: str | None, level: float, severity: float) -> DisturbanceResult:
    """Corruptions hurt shallow exits most, attacks on the final exit hurt it most; harder
    inputs make the exits less confident and push samples deeper."""
    attack = name in ATTACKS
    exit_acc = []
    for i, clean in enumerate(EXIT_ACCURACY):
        if name == "slowdown":
            hit = 0.15 * severity
        elif attack:
            hit = severity**0.8 * (0.45 + 0.55 * i / 3)
        else:
            hit = min(1.0, severity * (1.3 - 0.3 * i / 3)) ** 1.6
        exit_acc.append(round(0.1 + (clean - 0.1) * (1 - hit), 6))
    deep = min(severity * (2.5 if name == "slowdown" else 1.1), 1.0)
    raw = [0.55 * (1 - deep) + 0.02, 0.2 * (1 - 0.5 * deep), 0.12 + 0.3 * deep, 0.13 + 0.6 * deep]
    shares = [round(r / sum(raw), 6) for r in raw]
    routed_acc = round(exit_acc[-1] - 0.004 - 0.03 * severity * sum(shares[:3]), 6)
    capped_shares = [shares[0], round(1 - shares[0], 6), 0.0, 0.0]
    return DisturbanceResult(
        disturbance=name if target is None else f"{name}[{target}]",
        name=name,
        kind="attack" if attack else "corruption",
        level=float(level),
        exit_accuracy=exit_acc,
        backbone_accuracy=exit_acc[-1],
        backbone_flops=BACKBONE_FLOPS,
        routed=_routed(shares, routed_acc),
        capped=_routed(capped_shares, round(exit_acc[1] * 0.6 + routed_acc * 0.4, 6)),
    )


def slowdown_rows(results: dict[str, DisturbanceResult]) -> list[SlowdownRow]:
    rows = sorted((r for r in results.values() if r.name == "slowdown"), key=lambda r: r.level)
    clean = rows[0]

    def point(now: RoutedPoint, before: RoutedPoint) -> SlowdownPoint:
        saving0, saving = 1 - before.flops_fraction, 1 - now.flops_fraction
        return SlowdownPoint(now.accuracy, now.flops_fraction, saving, (saving0 - saving) / saving0)

    return [
        SlowdownRow(r.level, point(r.routed, clean.routed), point(r.capped, clean.capped))  # type: ignore[arg-type]
        for r in rows
    ]


def robustness_result(
    title: str = "BranchyResNet18 on synthetic-signs: robustness",
) -> RobustnessResult:
    results = {}
    for name, target, levels, strength in DISTURBANCES:
        for level in levels:
            row = _disturbed(name, target, level, strength * float(level) / float(max(levels)))
            results[f"{row.disturbance}@{level:g}"] = row
    config = RobustnessConfig(
        policy="MaxProbability(threshold=0.9, temperature=1.0)",
        cap_exit=CAP_EXIT,
        seed=0,
        num_samples=500,
        batch_size=100,
        disturbances=[
            DisturbanceSpec(n, tuple(float(v) for v in lv), t or "final")
            for n, t, lv, _ in DISTURBANCES
        ],
        dataset="synthetic-signs (test split)",
    )
    return RobustnessResult(
        config=config,
        results=results,
        slowdown=slowdown_rows(results),
        title=title,
        command="exitwise robustness runs/r18 --quick",
    )


# ------------------------------------------------------------------------------------ comparison


def comparison_result() -> ComparisonResult:
    def curve(offset: float) -> RunCurves:
        exits = [
            CurvePoint(a - offset, f) for a, f in zip(EXIT_ACCURACY, PATH_FRACTION, strict=True)
        ]
        fronts = {
            "max_probability": [CurvePoint(0.93 - offset, 0.35), CurvePoint(0.975 - offset, 0.5),
                                CurvePoint(0.984 - offset, 0.7)],
            "entropy": [CurvePoint(0.92 - offset, 0.33), CurvePoint(0.97 - offset, 0.52)],
        }  # fmt: skip
        return RunCurves(title=None, exits=exits, pareto=fronts)

    def at(run: str, policy: str, budget: float | None, acc: float, frac: float) -> ComparedPoint:
        return ComparedPoint(
            run, policy, threshold=0.95, budget=budget, val_accuracy=acc + 0.001,
            val_flops_fraction=frac - 0.01, accuracy=acc, mean_flops=frac * BACKBONE_FLOPS,
            flops_fraction=frac, delta_vs_reference=acc - 0.9853,
            exit_shares=(0.4, 0.3, 0.2, 0.1), met=frac <= 0.5 and acc >= 0.9803,
        )  # fmt: skip

    return ComparisonResult(
        reference=ReferenceInfo("resnet18", 0.9853, 0.9812, BACKBONE_FLOPS),
        tolerance=0.005,
        goal_fraction=0.5,
        budgets=[0.4, 0.5],
        dataset="synthetic-signs",
        num_samples=2580,
        at_budget=[
            at("branchy", "max_probability", 0.4, 0.951, 0.39),
            at("eenets", "max_probability", 0.4, 0.946, 0.38),
            ComparedPoint("eenets", "entropy", None, budget=0.4, note="no point within 40%"),
            at("branchy", "max_probability", 0.5, 0.975, 0.49),
            at("eenets", "max_probability", 0.5, 0.972, 0.5),
        ],
        goal=[
            at("branchy", "max_probability", None, 0.9825, 0.62),
            ComparedPoint(
                "eenets", "entropy", None, note="no threshold within tolerance", met=False
            ),
        ],
        runs={"branchy": curve(0.0), "eenets": curve(0.004)},
    )
