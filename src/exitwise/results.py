"""Typed study results (floor 1): what the efficiency, robustness and comparison studies return.

Each top-level result is a dataclass with a versioned ``to_json`` / ``from_json``: the JSON
carries ``"format": "exitwise.<kind>/<version>"``, and ``from_json`` checks the format tag and
every field against the dataclass's type hints, so an old, foreign or damaged file is refused with
one message naming the offending key path (e.g. ``evaluation.policies['entropy'].sweep[3].accuracy:
expected a number, got 'abc'``). Reports, ``compare`` and the CLI read these types, never raw
dictionaries.

FLOPs follow the convention of :mod:`exitwise.cost` (FLOPs = 2 x MACs); ``*_fraction`` values
are fractions of the plain backbone's FLOPs.
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from exitwise.atomic import write_json
from exitwise.errors import InputError

__all__ = [
    "ReliabilityBin",
    "ExitCalibration",
    "CalibrationSummary",
    "RiskFitResult",
    "EvidenceRow",
    "RiskEvidence",
    "ShiftRow",
    "RiskConfig",
    "RiskResult",
    "ResultError",
    "OperatingPoint",
    "ChosenPoint",
    "PolicyResult",
    "ExitResult",
    "BackboneResult",
    "DatasetInfo",
    "ModelInfo",
    "CostSummary",
    "OracleResult",
    "TrainingInfo",
    "EfficiencyResult",
    "RoutedPoint",
    "DisturbanceResult",
    "SlowdownPoint",
    "SlowdownRow",
    "RobustnessConfig",
    "RobustnessResult",
    "ReferenceInfo",
    "ComparedPoint",
    "CurvePoint",
    "RunCurves",
    "ComparisonResult",
    "LinkInfo",
    "OffloadConfig",
    "OffloadRow",
    "OffloadResult",
]

R = TypeVar("R", bound="_Result")


class ResultError(InputError):
    """A result file is old, foreign or damaged; the message names the key path and the fix."""


# ------------------------------------------------------------------------------ generic decoding


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
    if tp in names:
        return names[tp]
    origin = get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "an object"
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    return str(tp)


def _decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``; ``ResultError`` at the first mismatch."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, value, where)
            except ResultError:
                continue
        raise ResultError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ResultError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ResultError(f"{where}: expected a list, got {_show(value)}")
        (item,) = get_args(tp)[:1] or (Any,)
        items = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ResultError(f"{where}: expected an object, got {_show(value)}")
        _, item = get_args(tp)
        return {str(k): _decode(item, v, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ResultError(f"{where}: expected a number, got {_show(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ResultError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ResultError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")
        return value
    raise TypeError(f"results: no decoder for type {tp!r} at {where}")  # a bug, not bad input


def _decode_dataclass(cls: Any, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ResultError(f"{where}: expected an object, got {_show(value)}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ResultError(f"{where}: unexpected key(s) {', '.join(map(repr, unknown))}")
    kwargs = {}
    for name, f in known.items():
        if name in value:
            kwargs[name] = _decode(hints[name], value[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ResultError(f"{where}.{name} is missing")
    return cls(**kwargs)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


class _Result:
    """Base of the top-level results: a format tag, ``to_json`` / ``from_json``, save / load."""

    KIND: ClassVar[str]
    VERSION: ClassVar[int] = 1
    NOUN: ClassVar[str]  # how a message names the file's content
    ROOT: ClassVar[str]  # the root of key paths in messages
    REDO: ClassVar[str]  # the command that writes a fresh one

    @classmethod
    def format_tag(cls) -> str:
        return f"exitwise.{cls.KIND}/{cls.VERSION}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, ``format`` first."""
        return {"format": self.format_tag(), **_encode(self)}

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        """Decode ``data``; ``ResultError`` if it is not this kind at this version."""
        if not isinstance(data, dict):
            raise ResultError(f"expected {cls.NOUN} (a JSON object), got {_show(data)}")
        tag = data.get("format")
        if not isinstance(tag, str) or not tag.startswith("exitwise."):
            raise ResultError(
                f"not {cls.NOUN}: no exitwise format tag (written by an older exitwise, or "
                f"another tool); write a new one with `{cls.REDO}`"
            )
        kind, _, version = tag.removeprefix("exitwise.").partition("/")
        if kind != cls.KIND:
            raise ResultError(f"expected {cls.NOUN} ({cls.format_tag()}), got {tag}")
        if version != str(cls.VERSION):
            raise ResultError(
                f"{cls.NOUN} has format version {version}; this exitwise reads version "
                f"{cls.VERSION}: write a new one with `{cls.REDO}`"
            )
        body = {k: v for k, v in data.items() if k != "format"}
        return _decode_dataclass(cls, body, cls.ROOT)

    def save(self, path: str | Path) -> Path:
        """Write ``to_json()`` atomically to ``path``."""
        return write_json(path, self.to_json())

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read and decode ``path``; ``ResultError`` (naming the file) if it cannot be used."""
        path = Path(path)
        if not path.is_file():
            raise ResultError(f"{path} does not exist: write it with `{cls.REDO}`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ResultError(
                f"{path} is not valid JSON ({e}): write it again with `{cls.REDO}`"
            ) from None
        try:
            return cls.from_json(data)
        except ResultError as e:
            raise ResultError(f"{path}: {e}") from None


# ------------------------------------------------------------------------------------ efficiency


@dataclass(frozen=True)
class OperatingPoint:
    """One point of the accuracy-versus-FLOPs curve (one threshold of one exit rule)."""

    threshold: float
    accuracy: float
    mean_flops: float
    flops_fraction: float
    exit_shares: tuple[float, ...]
    thresholds: tuple[float, ...] | None = None  # per side exit, for per-exit threshold rules

    @property
    def mean_macs(self) -> float:
        return self.mean_flops / 2


@dataclass(frozen=True)
class ChosenPoint(OperatingPoint):
    """The threshold chosen on validation, with its test numbers and how it was chosen."""

    val_accuracy: float | None = None
    rule: str = ""


@dataclass
class PolicyResult:
    """One exit rule's sweep on the test split, its Pareto front, and the chosen threshold."""

    label: str
    sweep: list[OperatingPoint]
    pareto: list[OperatingPoint]
    chosen: ChosenPoint | None = None
    val_sweep: list[OperatingPoint] = field(default_factory=list)
    default: OperatingPoint | None = None  # the rule's default threshold (learned confidence)
    parameter: str | None = None  # what ``threshold`` holds, if not a threshold: "patience", ...


@dataclass(frozen=True)
class ExitResult:
    exit: int
    block: str
    accuracy: float
    path_flops: int
    path_fraction: float
    val_accuracy: float | None = None


@dataclass(frozen=True)
class BackboneResult:
    """The plain backbone: the final exit alone, at the backbone's cost."""

    accuracy: float
    flops: int
    val_accuracy: float | None = None
    label: str = "final exit only (plain backbone cost)"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_samples: int
    num_classes: int
    split: str = "test"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backbone: str | None
    num_exits: int
    exit_blocks: list[str]
    num_parameters: int


@dataclass(frozen=True)
class CostSummary:
    """The cost account at the evaluated input shape (see :class:`exitwise.cost.CostAccount`)."""

    input_shape: list[int]
    stage_flops: list[int]
    exit_flops: list[int]
    path_flops: list[int]
    path_macs: list[int]
    backbone_flops: int
    backbone_macs: int
    convention: str = "FLOPs = 2 x MACs, counted by torch.utils.flop_counter at batch size 1"


@dataclass(frozen=True)
class RoutedPoint:
    """A routed model on one set: an exit rule at one threshold, or the oracle (each sample
    leaves at the first exit that classifies it correctly)."""

    accuracy: float
    mean_flops: float
    flops_fraction: float
    exit_shares: tuple[float, ...]


OracleResult = RoutedPoint


@dataclass
class TrainingInfo:
    """How the evaluated model was trained, as its epochs recorded it."""

    seconds: float
    epochs: int
    device: str | list[str] | None
    machine: str
    threads: int | list[int] | None = None
    precision: str | list[str] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float  # mean max-probability in the bin (0 when empty)
    accuracy: float  # accuracy in the bin (0 when empty)


@dataclass(frozen=True)
class ExitCalibration:
    """One exit before and after temperature scaling (fitted on validation, measured on test)."""

    exit: int
    temperature: float
    ece_before: float
    ece_after: float
    ece_global: float  # with the one global temperature
    nll_before: float
    nll_after: float
    reliability_before: list[ReliabilityBin]
    reliability_after: list[ReliabilityBin]


@dataclass
class CalibrationSummary:
    """Temperatures fitted by NLL on validation, applied by every confidence-based rule; ECE with
    15 equal-width bins on the test split, before and after."""

    temperatures: list[float]
    global_temperature: float
    exits: list[ExitCalibration]
    exit_weights: list[float]  # each exit's validation accuracy (the committee's weights)
    bins: int = 15
    fitted_on: str = "validation"


@dataclass
class EfficiencyResult(_Result):
    """The efficiency study (seed 000 Figs. 3 and 4): ``evaluation.json``."""

    KIND: ClassVar[str] = "efficiency"
    NOUN: ClassVar[str] = "an efficiency evaluation"
    ROOT: ClassVar[str] = "evaluation"
    REDO: ClassVar[str] = "exitwise evaluate RUN_DIR"

    title: str
    dataset: DatasetInfo
    model: ModelInfo
    costs: CostSummary
    exits: list[ExitResult]
    backbone: BackboneResult
    oracle: RoutedPoint
    policies: dict[str, PolicyResult]
    training: TrainingInfo | None = None
    command: str | None = None
    notes: list[str] = field(default_factory=list)
    calibration: CalibrationSummary | None = None

    @property
    def num_exits(self) -> int:
        return len(self.exits)


# ------------------------------------------------------------------------------------ robustness


@dataclass
class DisturbanceResult:
    """One (disturbance, level): every exit's accuracy and the routed model's numbers."""

    disturbance: str  # the key, e.g. "pgd[final]"
    name: str  # e.g. "pgd"
    kind: Literal["corruption", "attack"]
    level: float
    exit_accuracy: list[float]
    backbone_accuracy: float
    backbone_flops: int
    routed: RoutedPoint
    capped: RoutedPoint | None = None


@dataclass(frozen=True)
class SlowdownPoint:
    accuracy: float
    flops_fraction: float
    saving: float  # 1 - flops_fraction
    saving_erased: float  # share of the clean saving the attack erased


@dataclass(frozen=True)
class SlowdownRow:
    eps: float
    routed: SlowdownPoint
    capped: SlowdownPoint | None = None


@dataclass(frozen=True)
class DisturbanceSpec:
    """One axis of the study: a corruption or an attack at several levels."""

    name: str
    levels: tuple[float, ...]
    target: str | int = "final"


@dataclass(frozen=True)
class RobustnessConfig:
    """Everything that decides the study's numbers; a saved study resumes only if all match."""

    policy: str
    cap_exit: int | None
    seed: int
    num_samples: int
    batch_size: int
    disturbances: list[DisturbanceSpec]
    model: str = ""  # fingerprint of the weights
    dataset: str = ""
    device: str = ""


@dataclass
class RobustnessResult(_Result):
    """The robustness study (seed 000 Figs. 5 and 6): ``robustness/study.json``."""

    KIND: ClassVar[str] = "robustness"
    NOUN: ClassVar[str] = "a robustness study"
    ROOT: ClassVar[str] = "study"
    REDO: ClassVar[str] = "exitwise robustness RUN_DIR"

    config: RobustnessConfig
    results: dict[str, DisturbanceResult] = field(default_factory=dict)
    slowdown: list[SlowdownRow] = field(default_factory=list)
    title: str = ""
    command: str | None = None


# ------------------------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class ReferenceInfo:
    """The reference network (the plain one): its final exit's accuracy and FLOPs."""

    run: str
    accuracy: float
    val_accuracy: float
    flops: int


@dataclass(frozen=True)
class ComparedPoint:
    """One run and rule at a FLOPs budget (``budget`` set) or at the accuracy goal.

    ``threshold`` is None when no validation point qualifies; ``note`` then says why.
    """

    run: str
    policy: str
    threshold: float | None
    budget: float | None = None
    val_accuracy: float | None = None
    val_flops_fraction: float | None = None
    accuracy: float | None = None
    mean_flops: float | None = None
    flops_fraction: float | None = None
    delta_vs_reference: float | None = None
    exit_shares: tuple[float, ...] = ()
    met: bool | None = None
    note: str | None = None


@dataclass(frozen=True)
class CurvePoint:
    accuracy: float
    flops_fraction: float


@dataclass
class RunCurves:
    """A run's exits and Pareto fronts, as fractions of the reference's FLOPs."""

    title: str | None
    exits: list[CurvePoint]
    pareto: dict[str, list[CurvePoint]]


@dataclass
class ComparisonResult(_Result):
    """Runs compared at equal mean FLOPs and against a plain network: ``comparison.json``."""

    KIND: ClassVar[str] = "comparison"
    NOUN: ClassVar[str] = "a comparison"
    ROOT: ClassVar[str] = "comparison"
    REDO: ClassVar[str] = "exitwise compare RUN_DIR... --out DIR"

    reference: ReferenceInfo
    tolerance: float
    goal_fraction: float | None
    budgets: list[float]
    dataset: str
    num_samples: int
    at_budget: list[ComparedPoint]
    goal: list[ComparedPoint]
    runs: dict[str, RunCurves]


# ------------------------------------------------------------------------------- risk control


@dataclass(frozen=True)
class RiskFitResult:
    """One fitted risk-controlling rule: thresholds chosen on calibration data, measured apart.

    ``thresholds`` (one per side exit) with the run's temperatures make an ordinary
    ``MaxProbability`` rule that runs live in ``route``.
    """

    method: Literal["crc", "ltt"]
    risk: Literal["disagreement", "gap"]
    rule: Literal["shared", "per_exit"]
    epsilon: float
    delta: float | None
    thresholds: tuple[float, ...]
    qualified: bool  # False when no grid point passed and everything goes to the final exit
    calib_risk: float
    calib_samples: int
    test_risk: float | None = None
    test_flops_fraction: float | None = None
    test_accuracy: float | None = None
    calibrated_on: str = "validation"
    measured_on: str = "test"


@dataclass(frozen=True)
class EvidenceRow:
    """One epsilon over many random calibration/test splits of held-out data."""

    epsilon: float
    crc_mean_risk: float
    crc_risk_p10: float
    crc_risk_p90: float
    crc_flops_fraction: float
    ltt_violation_rate: float
    ltt_mean_risk: float
    ltt_flops_fraction: float
    best_flops_fraction: float  # cheapest threshold whose test risk <= epsilon, chosen on test


@dataclass
class RiskEvidence:
    risk: Literal["disagreement", "gap"]
    rule: Literal["shared", "per_exit"]
    delta: float
    splits: int
    calib_fraction: float
    rows: list[EvidenceRow]


@dataclass(frozen=True)
class ShiftRow:
    """Thresholds calibrated on clean images, applied to a disturbed test set, and the same rule
    recalibrated on disturbed images (half of them, measured on the other half)."""

    disturbance: str
    level: float
    method: Literal["crc", "ltt"]
    clean_calibrated_risk: float
    clean_calibrated_flops_fraction: float
    recalibrated_risk: float
    recalibrated_flops_fraction: float
    final_exit_accuracy: float
    risk: Literal["disagreement", "gap"] | None = None  # None: not recorded
    rule: Literal["shared", "per_exit"] | None = None
    epsilon: float | None = None  # None: the study's ``config.user_epsilon``


@dataclass(frozen=True)
class RiskConfig:
    epsilons: list[float]
    delta: float
    risks: list[str]
    splits: int
    calib_fraction: float
    seed: int
    temperatures: list[float]
    user_epsilon: float
    user_method: str
    user_rule: str


@dataclass
class RiskResult(_Result):
    """The risk-control study of a run (issue 11): ``risk/risk.json``."""

    KIND: ClassVar[str] = "risk"
    NOUN: ClassVar[str] = "a risk-control study"
    ROOT: ClassVar[str] = "risk"
    REDO: ClassVar[str] = "exitwise risk RUN_DIR"

    title: str
    config: RiskConfig
    fitted: list[RiskFitResult]  # calibrated on validation, measured on test (GTSRB's own shift)
    evidence: list[RiskEvidence]
    shift: list[ShiftRow] = field(default_factory=list)
    recalibrated: list[RiskFitResult] = field(default_factory=list)  # on half of test
    command: str | None = None


# -------------------------------------------------------------------------------------- offload


@dataclass(frozen=True)
class LinkInfo:
    """The network an offloading study ran on: what was asked, and what was measured through
    the whole path (tbf-shaped veth between two namespaces and the delaying relay, or the relay
    alone on loopback)."""

    mode: Literal["netns", "loopback"]
    delay_by: Literal["relay", "netem"]
    rate_mbit: float
    rtt_ms: float
    jitter_ms: float
    measured_rtt_ms: float | None  # empty HTTP round trips, mean
    measured_rtt_std_ms: float | None
    measured_mbit: float | None  # iperf3 through the path
    measured_mbit_std: float | None
    rtt_samples: int
    edge_cpus: list[int]
    cloud_cpus: list[int]
    note: str = ""


@dataclass(frozen=True)
class OffloadConfig:
    """What an offloading study measured; a saved study resumes only under an equal config."""

    run: str
    dataset: str
    input_shape: list[int]
    num_exits: int
    sigmas: list[float]
    alphas: list[float]
    edge_exits: list[int]  # k: active side exits on the edge (1..num_exits-1)
    methods: list[str]  # rules at the edge: max_probability, committee
    latency_images: int  # images sent one at a time through the link per row
    test_images: int
    features: Literal["FP32", "FP16"]
    seed: int
    temperatures: list[float]
    exit_weights: list[float]
    fingerprint: str


@dataclass(frozen=True)
class OffloadRow:
    """One point of seed 002's grid: a blur level, and a rule with its alpha and k (or the
    cloud-only baseline, ``method="cloud_only"``, alpha and k None).

    Accuracy, edge share, FLOPs and bytes are exact over the whole test set (computed from the
    outputs of every exit); the latency is measured for real, one image per call through the
    link, on ``latency_images`` of them (a seeded subset, the same for every row)."""

    sigma: float
    method: str
    alpha: float | None
    edge_exits: int | None
    accuracy: float
    edge_share: float
    edge_flops: float  # mean per image, on the edge
    cloud_flops: float  # mean per image, in the cloud
    request_bytes: float  # request body per offloaded image (JSON header + raw tensor bytes)
    json_bytes: float  # the same tensor as JSON lists (the seed's encoding)
    wire_bytes: float  # request bytes per image, averaged over every image (0 when not sent)
    latency_ms: float  # end to end, per image
    latency_ci95_ms: float  # half-width of the 95% confidence interval of the mean
    latency_std_ms: float
    edge_ms: float  # of which edge compute (mean)
    network_ms: float  # of which network + cloud (mean over all measured images)
    latency_images: int
    live_edge_share: float  # on the measured images
    live_agreement: float  # live answers equal to the offline simulation
    fallbacks: int


@dataclass
class OffloadResult(_Result):
    """Seed 002's edge-cloud offloading study of a run (issue 12): ``offload/offload.json``."""

    KIND: ClassVar[str] = "offload"
    NOUN: ClassVar[str] = "an offloading study"
    ROOT: ClassVar[str] = "offload"
    REDO: ClassVar[str] = "exitwise offload RUN_DIR"

    title: str
    config: OffloadConfig
    link: LinkInfo | None
    rows: list[OffloadRow] = field(default_factory=list)
    image_bytes: int = 0  # one raw uint8 image
    command: str | None = None
    device: str = ""
