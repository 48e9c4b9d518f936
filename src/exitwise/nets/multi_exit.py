"""``MultiExitNet``: a backbone cut into stages with an exit after each stage.

Contract (see docs/DESIGN): ``model(x)`` returns the logits of every exit, shallow to deep, the last
being the backbone's own classifier; ``model.stages`` and ``model.exits`` are visible modules so the
network can run stage by stage; ``model.split(k)`` gives an edge part and a cloud part whose
composition equals the whole; ``model.costs`` is the measured cost account.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from exitwise.cost import CostAccount, count_flops
from exitwise.nets.backbones import build_backbone
from exitwise.nets.heads import build_exit_head
from exitwise.nets.placement import snap_to_blocks, target_fractions

__all__ = [
    "ExitOutput",
    "MultiExitNet",
    "EdgePart",
    "CloudPart",
    "Normalize",
    "build_multi_exit",
    "PRESETS",
    "build_preset",
]


class ExitOutput(NamedTuple):
    """What one exit produced for a batch.

    Attributes:
        logits: ``(B, num_classes)``.
        confidence: ``(B,)`` learned exit confidence in [0, 1] (EENets), or ``None``.
    """

    logits: Tensor
    confidence: Tensor | None = None


def as_exit_output(out: Tensor | tuple[Tensor, Tensor]) -> ExitOutput:
    if isinstance(out, tuple):
        logits, conf = out
        return ExitOutput(logits, conf.reshape(-1))
    return ExitOutput(out)


def run_stages(
    stages: Sequence[nn.Module], exits: Sequence[nn.Module], h: Tensor
) -> tuple[list[ExitOutput], Tensor]:
    """Run ``stages`` in order, each followed by its exit; return the outputs and the last ``h``."""
    outs = []
    for stage, head in zip(stages, exits, strict=True):
        h = stage(h)
        outs.append(as_exit_output(head(h)))
    return outs, h


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so inputs stay in pixel space [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one positive std per channel, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class MultiExitNet(nn.Module):
    """A network with ``len(exits)`` exits; stage ``i`` feeds exit ``i`` and stage ``i + 1``.

    Build one with :func:`build_multi_exit` or :func:`build_preset`.

    Args:
        stages: the backbone cut into consecutive pieces, one per exit.
        exits: exit heads; ``exits[-1]`` is the backbone's own classifier.
        input_shape: ``(C, H, W)`` of the inputs the model expects (costs are measured at it).
        num_classes: classes of every exit.
        config: the keyword arguments of :func:`build_multi_exit` that rebuild this model
            (stored with checkpoints).
        stage_blocks: names of the backbone blocks in each stage.
        check_inputs: validate rank, channels and finiteness of every input.

    Shape:
        input ``(B, C, H, W)`` in [0, 1] when ``normalize`` is set; output: a list of
        ``len(exits)`` tensors ``(B, num_classes)``.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        exits: Sequence[nn.Module],
        input_shape: tuple[int, int, int],
        num_classes: int,
        config: dict[str, Any] | None = None,
        stage_blocks: Sequence[Sequence[str]] | None = None,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        if len(stages) != len(exits) or not stages:
            raise ValueError(f"need one stage per exit, got {len(stages)} and {len(exits)}")
        self.stages = nn.ModuleList(stages)
        self.exits = nn.ModuleList(exits)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = num_classes
        self.config = dict(config or {})
        self.stage_blocks = [list(b) for b in (stage_blocks or [[] for _ in stages])]
        self.check_inputs = check_inputs
        self.placement: dict[str, list] | None = None  # set when exits were placed by FLOPs
        # Measured once, at construction: the cost account depends on the architecture and the
        # input size only, and measuring lazily inside a caller's FlopCounterMode would be counted.
        self._costs = measure_costs(self)

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def has_confidence(self) -> bool:
        """True when every side exit learns its own exit confidence (EENets)."""
        return self.num_exits > 1 and all(
            getattr(head, "has_confidence", False) for head in self.exits[:-1]
        )

    @property
    def exit_blocks(self) -> list[str]:
        """The backbone block each side exit is attached after."""
        return [blocks[-1] for blocks in self.stage_blocks[:-1] if blocks]

    def validate_input(self, x: Tensor) -> None:
        """Raise a ``ValueError`` that says what was expected if ``x`` is not a valid batch."""
        if not isinstance(x, Tensor):
            raise TypeError(
                f"expected a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}"
            )
        c = self.input_shape[0]
        if x.dim() != 4:
            hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
            raise ValueError(
                f"expected a 4-D batch (B, {c}, H, W), got shape {tuple(x.shape)}{hint}"
            )
        if x.shape[1] != c:
            raise ValueError(
                f"expected {c} input channel(s) (B, {c}, H, W), got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point batch in [0, 1], got dtype {x.dtype}")
        if self.check_inputs and x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or Inf values; expected finite pixels in [0, 1]")

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits of every exit, shallow to deep."""
        return [o.logits for o in self.forward_outputs(x)]

    def forward_outputs(self, x: Tensor) -> list[ExitOutput]:
        """Every exit's :class:`ExitOutput` (logits and, for EENets exits, confidence)."""
        self.validate_input(x)
        return run_stages(self.stages, self.exits, x)[0]

    @property
    def costs(self) -> CostAccount:
        """The measured per-sample FLOPs of every stage and exit head (see :mod:`exitwise.cost`)."""
        return self._costs

    def split(self, k: int) -> tuple[EdgePart, CloudPart]:
        """Split after exit ``k``: the edge runs stages and exits ``0..k``, the cloud the rest.

        ``edge(x)`` returns ``(exit_outputs, h)``; ``cloud(h)`` returns the remaining exit
        outputs; together they equal ``model.forward_outputs(x)``. The parts share parameters
        with the model.
        """
        if not 0 <= k < self.num_exits - 1:
            raise ValueError(f"split point must be a side exit in 0..{self.num_exits - 2}, got {k}")
        return EdgePart(self, k), CloudPart(self, k)


class EdgePart(nn.Module):
    """Stages and exits ``0..k`` of a :class:`MultiExitNet`."""

    def __init__(self, model: MultiExitNet, k: int) -> None:
        super().__init__()
        self.k = k
        self.input_shape = model.input_shape
        self.stages = nn.ModuleList(model.stages[: k + 1])
        self.exits = nn.ModuleList(model.exits[: k + 1])
        self._validate = model.validate_input

    def forward(self, x: Tensor) -> tuple[list[ExitOutput], Tensor]:
        self._validate(x)
        return run_stages(self.stages, self.exits, x)


class CloudPart(nn.Module):
    """Stages and exits ``k+1..`` of a :class:`MultiExitNet`; reads the edge's tensor."""

    def __init__(self, model: MultiExitNet, k: int) -> None:
        super().__init__()
        self.k = k
        self.stages = nn.ModuleList(model.stages[k + 1 :])
        self.exits = nn.ModuleList(model.exits[k + 1 :])

    def forward(self, h: Tensor) -> list[ExitOutput]:
        return run_stages(self.stages, self.exits, h)[0]


def measure_costs(model: MultiExitNet) -> CostAccount:
    """Count the FLOPs of every stage and exit head at ``model.input_shape``, batch size 1."""
    p = next(model.parameters())
    h = torch.zeros((1, *model.input_shape), dtype=p.dtype, device=p.device)
    was_training = model.training
    model.eval()
    try:
        stage_flops, exit_flops = [], []
        for stage, head in zip(model.stages, model.exits, strict=True):
            stage_flops.append(count_flops(lambda s=stage, x=h: s(x)))
            with torch.no_grad():
                h = stage(h)
            exit_flops.append(count_flops(lambda e=head, x=h: e(x)))
    finally:
        model.train(was_training)
    return CostAccount(tuple(stage_flops), tuple(exit_flops), model.input_shape)


def build_multi_exit(
    backbone: str,
    num_classes: int,
    input_shape: Sequence[int] = (3, 32, 32),
    exits_after: Sequence[str] | None = None,
    distribution: str | None = None,
    num_side_exits: int = 3,
    exit_head: str = "branchy",
    exit_head_options: dict[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    backbone_options: dict[str, Any] | None = None,
    seed: int | None = None,
) -> MultiExitNet:
    """Build a multi-exit network from a registered backbone.

    Exits go after the blocks named in ``exits_after``, or, with ``distribution`` (``linear``,
    ``pareto``, ``fine``, ``golden``), after the blocks nearest to the target cumulative-FLOPs
    fractions; the achieved fractions are in ``model.placement``.

    Args:
        backbone: registry name, e.g. ``"resnet18"``, ``"mobilenet_v2"``, ``"resnet56"``.
        num_classes: classes of every exit.
        input_shape: ``(C, H, W)`` of the inputs.
        exits_after: block names, e.g. ``["layer1.1", "layer2.1", "layer3.1"]``.
        distribution: place ``num_side_exits`` exits by FLOPs instead of by name.
        num_side_exits: how many side exits ``distribution`` places.
        exit_head: ``"branchy"`` (conv + pool + linear) or ``"pool"`` (pool + linear).
        exit_head_options: e.g. ``{"width": 64, "stride": 2}`` for ``branchy``.
        mean, std: per-channel normalisation applied inside the model (inputs in [0, 1]).
        backbone_options: e.g. ``{"stem": "cifar"}`` for ``resnet18``.
        seed: seeds parameter initialisation when given.
    """
    config = {
        "backbone": backbone,
        "num_classes": num_classes,
        "input_shape": [int(d) for d in input_shape],
        "exits_after": list(exits_after) if exits_after is not None else None,
        "distribution": distribution,
        "num_side_exits": num_side_exits,
        "exit_head": exit_head,
        "exit_head_options": dict(exit_head_options or {}),
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "backbone_options": dict(backbone_options or {}),
        "seed": seed,
    }
    if len(config["input_shape"]) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    if (exits_after is None) == (distribution is None):
        raise ValueError("give exactly one of exits_after (block names) or distribution")
    if seed is not None:
        torch.manual_seed(seed)
    c = config["input_shape"][0]
    bb = build_backbone(backbone, num_classes, in_channels=c, **config["backbone_options"])
    names = bb.block_names()

    # Probe every block once: output channels (for the heads) and FLOPs (for placement).
    x = torch.zeros((1, *config["input_shape"]))
    out_shapes, block_flops = {}, []
    with torch.no_grad():
        for name, block in bb.blocks:
            block.eval()
            block_flops.append(count_flops(lambda b=block, x=x: b(x)))
            x = block(x)
            block.train()
            out_shapes[name] = tuple(x.shape[1:])
        head_flops = count_flops(lambda: bb.head.eval()(x))
        bb.head.train()
    total = sum(block_flops) + head_flops

    if distribution is not None:
        targets = target_fractions(distribution, num_side_exits)
        chosen, achieved = snap_to_blocks(names, block_flops, total, targets)
        placement = {"targets": targets, "achieved": achieved, "blocks": chosen}
    else:
        chosen = list(exits_after)
        placement = None
        unknown = [n for n in chosen if n not in out_shapes]
        if unknown:
            raise ValueError(
                f"unknown block name(s) {unknown} for backbone {backbone!r}; "
                f"available: {', '.join(names[:-1])}"
            )
        order = [names.index(n) for n in chosen]
        if order != sorted(set(order)):
            raise ValueError(
                f"exits_after must name distinct blocks in network order, got {chosen}"
            )
        if order and order[-1] == len(names) - 1:
            raise ValueError(
                f"{names[-1]!r} is the last block: the backbone's own classifier already sits "
                "there; place side exits before it"
            )

    stages, stage_blocks, current = [], [], []
    for i, (name, block) in enumerate(bb.blocks):
        current.append((name, block))
        if name in chosen or i == len(bb.blocks) - 1:
            stage_blocks.append([n for n, _ in current])
            stages.append(nn.Sequential(*[m for _, m in current]))
            current = []
    if mean is not None or std is not None:
        if mean is None or std is None or len(mean) != c or len(std) != c:
            raise ValueError(f"mean and std need {c} values each, got {mean} and {std}")
        stages[0] = nn.Sequential(Normalize(mean, std), *stages[0])
    exits = [
        build_exit_head(
            exit_head, out_shapes[n][0], num_classes, out_shapes[n], **config["exit_head_options"]
        )
        for n in chosen
    ]
    exits.append(bb.head)
    net = MultiExitNet(
        stages, exits, tuple(config["input_shape"]), num_classes, config, stage_blocks
    )
    net.placement = placement
    return net


PRESETS: dict[str, dict[str, Any]] = {
    # Seed 000 (Chesalin et al.): torchvision's ResNet-18 with an exit after each of its first
    # three stages. Its own (ImageNet) stem by default; backbone_options={"stem": "cifar"} or
    # "half" keep more resolution on 32x32 inputs at 15x or 4x the FLOPs.
    "branchy_resnet18": {
        "backbone": "resnet18",
        "exits_after": ["layer1.1", "layer2.1", "layer3.1"],
        "exit_head": "branchy",
        "backbone_options": {"stem": "imagenet"},
    },
    # Seed 002 (Pacheco et al.): MobileNetV2 with 3 side exits equidistant in FLOPs (SPINN).
    "mobilenet_v2_3exits": {
        "backbone": "mobilenet_v2",
        "distribution": "linear",
        "num_side_exits": 3,
        "exit_head": "branchy",
    },
}


def build_preset(name: str, num_classes: int, **overrides: Any) -> MultiExitNet:
    """Build a named preset (``PRESETS``) with optional overrides of its keyword arguments."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    kwargs = {**PRESETS[name], **overrides}
    return build_multi_exit(num_classes=num_classes, **kwargs)
