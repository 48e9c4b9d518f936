"""Routed inference with true per-sample early exit, and its offline twin.

* :func:`route` runs a batch stage by stage; after each exit the samples that leave are dropped
  from the batch, so no later stage or head runs for them.
* :func:`simulate` applies the same policy to exit outputs computed once over a dataset
  (:func:`collect_outputs`) with vectorised tensor ops; it predicts exactly what :func:`route`
  does (predictions, exit taken, FLOPs).
* :func:`sweep`, :func:`pareto_front` and :func:`oracle` build the accuracy-versus-FLOPs picture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import torch
from torch import Tensor

from exitwise.cost import CostAccount
from exitwise.devices import module_device
from exitwise.nets.modes import eval_mode
from exitwise.nets.multi_exit import MultiExitNet
from exitwise.outputs import ExitOutput, as_exit_output, take_rows
from exitwise.policies import ExitPolicy, default_thresholds
from exitwise.results import OperatingPoint

__all__ = [
    "ExitResults",
    "OperatingPoint",
    "route",
    "route_until",
    "Routed",
    "collect_outputs",
    "simulate",
    "sweep",
    "pareto_front",
    "oracle",
    "default_thresholds",
]


@dataclass
class ExitResults:
    """Per-sample outcome of routed inference or of a simulation.

    Attributes:
        prediction: ``(N,)`` int64 predicted class.
        exit_idx: ``(N,)`` int64 exit each sample left at.
        confidence: ``(N,)`` the policy's confidence at that exit.
        flops: ``(N,)`` int64 FLOPs each sample cost (stages + heads evaluated + the rule's
            decision FLOPs at every side exit it was decided at).
        num_exits: number of exits of the model.
    """

    prediction: Tensor
    exit_idx: Tensor
    confidence: Tensor
    flops: Tensor
    num_exits: int

    def __len__(self) -> int:
        return self.prediction.shape[0]

    @property
    def exit_counts(self) -> list[int]:
        return torch.bincount(self.exit_idx.cpu(), minlength=self.num_exits).tolist()

    @property
    def exit_shares(self) -> list[float]:
        n = max(len(self), 1)
        return [c / n for c in self.exit_counts]

    @property
    def mean_flops(self) -> float:
        return float(self.flops.double().mean()) if len(self) else 0.0

    @property
    def total_flops(self) -> int:
        return int(self.flops.sum())

    def accuracy(self, labels: Tensor) -> float:
        if labels.shape != self.prediction.shape:
            raise ValueError(
                f"labels must have shape {tuple(self.prediction.shape)}, got {tuple(labels.shape)}"
            )
        return float((self.prediction == labels.to(self.prediction.device)).double().mean())


def _check_policy(policy: object, caller: str, num_exits: int) -> None:
    """A clear ``TypeError`` for what is not an exit rule (a name string, a class, ...), and the
    rule's own check of its per-exit values against ``num_exits``."""
    if isinstance(policy, ExitPolicy):
        policy.check_exits(num_exits)
        return
    if isinstance(policy, str):
        raise TypeError(
            f"{caller} needs an ExitPolicy object such as MaxProbability(0.9), got the string "
            f"{policy!r}; build one from a name with "
            "exitwise.policies.POLICIES.get(name).make(t, PolicyContext())"
        )
    if isinstance(policy, type) and issubclass(policy, ExitPolicy):
        raise TypeError(
            f"{caller} needs an ExitPolicy object, got the class {policy.__name__}; "
            f"instantiate it, e.g. {policy.__name__}(0.9)"
        )
    hint = (
        "; subclass exitwise.policies.ExitPolicy (it provides final, decision_flops and "
        "check_exits)"
        if callable(getattr(policy, "decide", None))
        else ""
    )
    raise TypeError(
        f"{caller} needs an ExitPolicy object such as MaxProbability(0.9), got "
        f"{type(policy).__name__}{hint}"
    )


def _decision_flops(
    policy: ExitPolicy, num_exits: int, num_classes: int, device: torch.device | str
) -> Tensor | None:
    """``(E,)`` int64: the rule's decision FLOPs per sample summed over the side exits
    ``0..i`` (the last exit is decided by ``policy.final``, which combines nothing); ``None`` when
    the rule spends none."""
    per_exit = [policy.decision_flops(i, num_classes) for i in range(num_exits - 1)]
    if not any(per_exit):
        return None
    cumulative = list(accumulate(per_exit))
    return torch.tensor([*cumulative, cumulative[-1]], dtype=torch.int64, device=device)


Part = tuple[Tensor | None, int, Tensor, Tensor]
"""Samples that left at one exit: their rows (``None``: the whole batch), the exit, their
predictions and confidences."""


@dataclass
class Routed:
    """What :func:`route_until` leaves: the samples that left, and those still running.

    Attributes:
        parts: one :data:`Part` per exit at which samples left, shallow to deep.
        rows: original row of every sample still running (``None``: all of them).
        h: the tensor after the last stage run, for the samples still running.
        history: the outputs of the exits run, for the samples still running (empty when
            none is).
    """

    parts: list[Part]
    rows: Tensor | None
    h: Tensor
    history: list[ExitOutput]


@torch.no_grad()
def route_until(model: MultiExitNet, x: Tensor, policy: ExitPolicy, stop: int) -> Routed:
    """True per-sample early exit through exits ``0..stop``: after each exit the samples the
    policy lets leave are removed from the batch (compaction) before the next stage runs; the
    loop ends when none is left. At the last exit of the model every sample leaves
    (``policy.final``); at a side exit ``stop`` the rest stay running (the edge of a split
    model hands them to the cloud). The model runs in eval mode, every submodule's mode
    restored afterwards. :func:`route` and :class:`~exitwise.serving.edge.EdgeRuntime` run on it.
    """
    model.validate_input(x)
    if not 0 <= stop < model.num_exits:
        raise ValueError(f"stop must be an exit in 0..{model.num_exits - 1}, got {stop}")
    n, device = x.shape[0], x.device
    last = model.num_exits - 1
    parts: list[Part] = []
    idx: Tensor | None = None  # original row of each sample still running; None = all rows
    h, history = x, []
    with eval_mode(model):
        for i in range(stop + 1 if n else 0):
            h = model.stages[i](h)
            out = as_exit_output(model.exits[i](h))
            history.append(out)
            dec = policy.final(history) if i == last else policy.decide(i, history)
            leave = dec.exit_mask
            n_leave = int(leave.sum())
            if n_leave == leave.shape[0]:
                parts.append((idx, i, dec.prediction, dec.confidence))
                none = torch.zeros(0, dtype=torch.int64, device=device)
                return Routed(parts, none, h[:0], [])
            if n_leave:
                if idx is None:
                    idx = torch.arange(n, device=device)
                parts.append((idx[leave], i, dec.prediction[leave], dec.confidence[leave]))
                keep = ~leave
                idx, h = idx[keep], h[keep]
                history = [take_rows(o, keep) for o in history]
    return Routed(parts, idx, h, history)


@torch.no_grad()
def route(model: MultiExitNet, x: Tensor, policy: ExitPolicy) -> ExitResults:
    """Classify a batch with true per-sample early exit.

    After each exit the samples the policy lets leave are removed from the batch (compaction), so
    the next stage runs on the rest only; the loop stops when no sample is left. The model runs in
    eval mode (:func:`~exitwise.nets.eval_mode`) and every submodule's mode is restored
    afterwards. It runs where ``x`` is: the model must be on that device, in ``x``'s dtype (a
    float64 batch for a float32 model is refused with a message, not converted).

    Args:
        model: the multi-exit network.
        x: ``(B, C, H, W)`` batch in [0, 1]; ``B`` may be 1 (or 0); any ``H, W`` the stages
            accept.
        policy: the exit rule for the side exits (an :class:`~exitwise.policies.ExitPolicy`
            object, e.g. ``MaxProbability(0.9)``); the last exit takes every sample left.

    Returns:
        Per-sample prediction, exit taken, confidence and FLOPs spent, in input order. The FLOPs
        are those of ``model.costs_at(x.shape[1:])`` plus the rule's
        :meth:`~exitwise.policies.ExitPolicy.decision_flops` at every side exit the sample was
        decided at: what ``FlopCounterMode`` counts around the call.
    """
    _check_policy(policy, "route", model.num_exits)
    parts = route_until(model, x, policy, model.num_exits - 1).parts  # validates x first
    n, device = x.shape[0], x.device
    path_flops = model.costs_at(x.shape[1:]).path_flops_tensor(device)

    if len(parts) == 1 and parts[0][0] is None:  # the whole batch left at one exit
        _, i, pred, conf = parts[0]
        exit_idx = torch.full((n,), i, dtype=torch.int64, device=device)
    else:
        pred = torch.empty(n, dtype=torch.int64, device=device)
        exit_idx = torch.empty(n, dtype=torch.int64, device=device)
        conf = torch.empty(n, dtype=x.dtype, device=device)
        for rows, i, p, c in parts:
            pred[rows], conf[rows], exit_idx[rows] = p, c.to(conf.dtype), i
    flops = path_flops[exit_idx]
    extra = _decision_flops(policy, model.num_exits, model.num_classes, device)
    if extra is not None:
        flops = flops + extra[exit_idx]
    return ExitResults(pred, exit_idx, conf, flops, model.num_exits)


@torch.no_grad()
def collect_outputs(
    model: MultiExitNet,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[ExitOutput], Tensor | None]:
    """Run every exit on every sample once and keep the outputs (for simulation and sweeps).

    Args:
        model: the multi-exit network (run in eval mode on its own device; every submodule's
            mode is restored).
        batches: an iterable of image batches or ``(images, labels)`` pairs, on any device
            (each batch is moved to the model's).
        progress: called with the number of samples of each finished batch.

    Returns:
        One :class:`ExitOutput` per exit over all samples (on the CPU), and the labels if given.
    """
    device = module_device(model)
    per_exit: list[list[ExitOutput]] = [[] for _ in range(model.num_exits)]
    labels: list[Tensor] = []
    with eval_mode(model):
        for batch in batches:
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            outs = model.forward_outputs(x.to(device, non_blocking=True))
            for store, out in zip(per_exit, outs, strict=True):
                conf = None if out.confidence is None else out.confidence.cpu()
                store.append(ExitOutput(out.logits.cpu(), conf))
            if y is not None:
                labels.append(y.cpu())
            if progress is not None:
                progress(x.shape[0])
    if not per_exit[0]:
        raise ValueError("collect_outputs got no batches")
    outputs = [
        ExitOutput(torch.cat([o.logits for o in store]), _cat_confidence(store))
        for store in per_exit
    ]
    return outputs, (torch.cat(labels) if labels else None)


def _cat_confidence(store: Sequence[ExitOutput]) -> Tensor | None:
    confs = [o.confidence for o in store if o.confidence is not None]
    return torch.cat(confs) if confs else None


def simulate(outputs: Sequence[ExitOutput], policy: ExitPolicy, costs: CostAccount) -> ExitResults:
    """What :func:`route` would decide, computed from outputs collected once.

    Args:
        outputs: one :class:`ExitOutput` per exit over the same ``N`` samples.
        policy: the exit rule.
        costs: the model's cost account at the shape of the samples
            (``model.costs_at(shape)``; gives each exit's path FLOPs, to which the rule's
            decision FLOPs are added as in :func:`route`).
    """
    _check_policy(policy, "simulate", costs.num_exits)
    if len(outputs) != costs.num_exits:
        raise ValueError(f"expected outputs of {costs.num_exits} exits, got {len(outputs)}")
    decisions = [policy.decide(i, outputs[: i + 1]) for i in range(len(outputs) - 1)]
    decisions.append(policy.final(outputs))
    leave = torch.stack([d.exit_mask for d in decisions])  # (E, N)
    exit_idx = leave.to(torch.int8).argmax(dim=0).to(torch.int64)  # first exit that lets go
    pick = exit_idx.unsqueeze(0)
    pred = torch.stack([d.prediction for d in decisions]).gather(0, pick).squeeze(0)
    conf = torch.stack([d.confidence for d in decisions]).gather(0, pick).squeeze(0)
    flops = costs.path_flops_tensor(exit_idx.device)[exit_idx]
    extra = _decision_flops(policy, costs.num_exits, outputs[0].logits.shape[1], exit_idx.device)
    if extra is not None:
        flops = flops + extra[exit_idx]
    return ExitResults(pred, exit_idx, conf, flops, costs.num_exits)


def _point(
    threshold: float, res: ExitResults, labels: Tensor, costs: CostAccount
) -> OperatingPoint:
    return OperatingPoint(
        threshold,
        res.accuracy(labels),
        res.mean_flops,
        res.mean_flops / costs.backbone_flops,
        tuple(res.exit_shares),
    )


def sweep(
    outputs: Sequence[ExitOutput],
    labels: Tensor,
    costs: CostAccount,
    make_policy: Callable[[float], ExitPolicy],
    thresholds: Sequence[float],
) -> list[OperatingPoint]:
    """Accuracy and mean FLOPs of ``make_policy(t)`` for every threshold ``t``."""
    return [
        _point(float(t), simulate(outputs, make_policy(float(t)), costs), labels, costs)
        for t in thresholds
    ]


def pareto_front(points: Sequence[OperatingPoint]) -> list[OperatingPoint]:
    """The points no other point beats on both accuracy (higher) and mean FLOPs (lower)."""
    front: list[OperatingPoint] = []
    for p in sorted(points, key=lambda q: (q.mean_flops, -q.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def oracle(outputs: Sequence[ExitOutput], labels: Tensor, costs: CostAccount) -> ExitResults:
    """Each sample leaves at the first exit that classifies it correctly (else at the last exit)."""
    preds = torch.stack([o.logits.argmax(dim=1) for o in outputs])  # (E, N)
    correct = preds == labels.unsqueeze(0)
    correct[-1] = True
    exit_idx = correct.to(torch.int8).argmax(dim=0).to(torch.int64)
    pred = preds.gather(0, exit_idx.unsqueeze(0)).squeeze(0)
    probs = torch.stack([torch.softmax(o.logits, dim=1).amax(dim=1) for o in outputs])
    conf = probs.gather(0, exit_idx.unsqueeze(0)).squeeze(0)
    flops = costs.path_flops_tensor(exit_idx.device)[exit_idx]
    return ExitResults(pred, exit_idx, conf, flops, costs.num_exits)
