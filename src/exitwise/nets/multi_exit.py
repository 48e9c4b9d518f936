"""``MultiExitNet``: a backbone cut into stages with an exit after each stage.

Contract (see docs/DESIGN): ``model(x)`` returns the logits of every exit, shallow to deep, the last
being the backbone's own classifier; ``model.stages`` and ``model.exits`` are visible modules so the
network can run stage by stage; ``model.split(k)`` gives an edge part and a cloud part whose
composition equals the whole; ``model.costs`` is the measured cost account.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from exitwise.cost import CostAccount, count_flops_and_output
from exitwise.devices import fork_rng, seed_rng
from exitwise.nets.backbones import build_backbone
from exitwise.nets.heads import build_exit_head
from exitwise.nets.modes import eval_mode
from exitwise.nets.placement import snap_to_blocks, target_fractions
from exitwise.outputs import ExitOutput, as_exit_output

__all__ = [
    "ExitOutput",
    "as_exit_output",
    "MultiExitNet",
    "EdgePart",
    "CloudPart",
    "Normalize",
    "build_multi_exit",
    "measure_costs",
    "PRESETS",
    "build_preset",
]

Shape3 = tuple[int, int, int]


def run_stages(
    stages: Iterable[nn.Module], exits: Iterable[nn.Module], h: Tensor
) -> tuple[list[ExitOutput], Tensor]:
    """Run ``stages`` in order, each followed by its exit; return the outputs and the last ``h``."""
    outs = []
    for stage, head in zip(stages, exits, strict=True):
        h = stage(h)
        outs.append(as_exit_output(head(h)))
    return outs, h


def run_final(stages: Iterable[nn.Module], head: nn.Module, h: Tensor) -> ExitOutput:
    """Run ``stages`` in order, then ``head`` alone (no exit between them)."""
    for stage in stages:
        h = stage(h)
    return as_exit_output(head(h))


def _tracing() -> bool:
    """True under ``torch.jit.trace`` or ``torch.compile``, where no cost is measured."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so inputs stay in pixel space [0, 1]."""

    mean: Tensor
    std: Tensor

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
        input_shape: ``(C, H, W)`` the model was built for (``model.costs`` is measured at it;
            other sizes the stages accept work too, see :meth:`costs_at`).
        num_classes: classes of every exit.
        config: the keyword arguments of :func:`build_multi_exit` that rebuild this model
            (stored with checkpoints).
        stage_blocks: names of the backbone blocks in each stage.
        check_inputs: also check that every input is finite (costs a device sync per batch).

    Shape:
        input ``(B, C, H, W)`` in [0, 1] when ``normalize`` is set, in the dtype and on the device
        of the model's parameters; output: a list of ``len(exits)`` tensors
        ``(B, num_classes)``.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        exits: Sequence[nn.Module],
        input_shape: Sequence[int],
        num_classes: int,
        config: dict[str, Any] | None = None,
        stage_blocks: Sequence[Sequence[str]] | None = None,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        if len(stages) != len(exits) or not stages:
            raise ValueError(f"need one stage per exit, got {len(stages)} and {len(exits)}")
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        self.stages = nn.ModuleList(stages)
        self.exits = nn.ModuleList(exits)
        c, h, w = (int(d) for d in input_shape)
        self.input_shape: Shape3 = (c, h, w)
        self.num_classes = num_classes
        self.config = dict(config or {})
        self.stage_blocks = [list(b) for b in (stage_blocks or [[] for _ in stages])]
        self.check_inputs = check_inputs
        self.placement: dict[str, Any] | None = None  # set when exits were placed by FLOPs
        # One cost account per input shape (C, H, W), measured the first time a shape is seen;
        # the build shape's is measured now.
        self._costs: dict[Shape3, CostAccount] = {}
        self._costs[self.input_shape] = measure_costs(self)

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
        """Raise an error that says what was expected and how to fix it if ``x`` is not a batch
        this model can run.

        Checked: a 4-D tensor with the model's channels, a spatial size the stages accept (see
        :meth:`costs_at`), floating point in the model's own dtype (a float64 batch for a
        float32 model is refused, not converted: convert it with ``x.float()``), on the
        model's device, and, with ``check_inputs``, finite.
        """
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
            raise ValueError(
                f"expected a floating-point batch in [0, 1], got dtype {x.dtype}; "
                "convert uint8 pixels with x.float() / 255"
            )
        p = next(self.parameters())
        if x.dtype != p.dtype:
            raise ValueError(
                f"expected a {p.dtype} batch (the model's dtype), got {x.dtype}; convert the "
                f"batch with x.to({p.dtype}) or the model with model.to({x.dtype})"
            )
        if x.device != p.device:
            raise ValueError(
                f"the batch is on {x.device} but the model on {p.device}; move the batch with "
                f"x.to('{p.device}') or the model with model.to('{x.device}')"
            )
        shape = (c, int(x.shape[2]), int(x.shape[3]))
        if shape not in self._costs and not _tracing():
            self.costs_at(shape)  # refuses sizes the stages cannot run, naming both shapes
        if self.check_inputs and x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or Inf values; expected finite pixels in [0, 1]")

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits of every exit, shallow to deep."""
        return [o.logits for o in self.forward_outputs(x)]

    def forward_outputs(self, x: Tensor) -> list[ExitOutput]:
        """Every exit's :class:`ExitOutput` (logits and, for EENets exits, confidence)."""
        self.validate_input(x)
        return run_stages(self.stages, self.exits, x)[0]

    def final_output(self, x: Tensor) -> ExitOutput:
        """The final exit's output alone: the backbone as a conventional network (no side exit
        head is evaluated), e.g. the cloud-only baseline of seed 002."""
        self.validate_input(x)
        return run_final(self.stages, self.exits[-1], x)

    @property
    def costs(self) -> CostAccount:
        """The measured per-sample FLOPs of every stage and exit head at ``input_shape``, the
        shape the model was built for (see :mod:`exitwise.cost`; :meth:`costs_at` for others)."""
        return self._costs[self.input_shape]

    def costs_at(self, shape: Sequence[int]) -> CostAccount:
        """The cost account for inputs of shape ``(C, H, W)``, measured once and cached.

        FLOPs grow with the input's area, so a batch larger than the build shape costs more
        than ``model.costs`` says; routing uses the account of the shape it was given. The
        measurement runs one zero image through the model in eval mode, outside any
        ``FlopCounterMode`` the caller has open.

        Raises:
            ValueError: if the stages cannot run inputs of that shape (wrong channels, smaller
                than the network's strides allow), naming the expected and the received shape.
        """
        key = _as_shape(shape, self.input_shape)
        account = self._costs.get(key)
        if account is None:
            account = measure_costs(self, key)
            self._costs[key] = account
        return account

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

    def final_output(self, h: Tensor) -> ExitOutput:
        """The final exit's output alone (the cloud's side exits are not evaluated)."""
        return run_final(self.stages, self.exits[-1], h)


def _as_shape(shape: Sequence[int], expected: Shape3) -> Shape3:
    """``shape`` as a ``(C, H, W)`` tuple with the expected channels, else a ``ValueError``."""
    dims = tuple(int(d) for d in shape)
    if len(dims) != 3 or dims[0] != expected[0] or min(dims) < 1:
        raise ValueError(
            f"expected an input shape (C, H, W) = ({expected[0]}, H, W) with H, W >= 1 (the "
            f"network was built for {expected}), got {tuple(shape)}"
        )
    return dims[0], dims[1], dims[2]


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def measure_costs(model: MultiExitNet, input_shape: Sequence[int] | None = None) -> CostAccount:
    """Count the FLOPs of every stage and exit head at batch size 1.

    Args:
        model: the network (run in eval mode on its own device and dtype; its modes are
            restored).
        input_shape: ``(C, H, W)``; default ``model.input_shape``.

    Raises:
        ValueError: if the network cannot run inputs of that shape.
    """
    shape = _as_shape(model.input_shape if input_shape is None else input_shape, model.input_shape)
    p = next(model.parameters())
    h = torch.zeros((1, *shape), dtype=p.dtype, device=p.device)
    stage_flops, exit_flops = [], []
    with eval_mode(model):
        for i, (stage, head) in enumerate(zip(model.stages, model.exits, strict=True)):
            try:
                flops, h = count_flops_and_output(partial(stage, h))
                stage_flops.append(flops)
                if h.numel() == 0:
                    raise RuntimeError(f"stage {i} produced an empty feature map {tuple(h.shape)}")
                exit_flops.append(count_flops_and_output(partial(head, h))[0])
            except RuntimeError as e:
                raise ValueError(
                    f"the network built for inputs {model.input_shape} cannot run inputs of shape "
                    f"{shape} (too small for its strides?): stage {i} failed: {_first_line(e)}"
                ) from None
    return CostAccount(tuple(stage_flops), tuple(exit_flops), shape)


def _probe_blocks(
    blocks: Sequence[tuple[str, nn.Module]], head: nn.Module, shape: Shape3
) -> tuple[dict[str, Shape3], list[int], int]:
    """Run one zero image through every block: output shapes (for the heads) and FLOPs."""
    x = torch.zeros((1, *shape))
    out_shapes: dict[str, Shape3] = {}
    block_flops: list[int] = []
    with eval_mode(nn.ModuleList([m for _, m in blocks] + [head])):
        for name, block in blocks:
            try:
                flops, x = count_flops_and_output(partial(block, x))
            except RuntimeError as e:
                raise ValueError(
                    f"input_shape {shape} is too small for this backbone: block {name!r} "
                    f"failed: {_first_line(e)}"
                ) from None
            block_flops.append(flops)
            _, oc, oh, ow = x.shape
            out_shapes[name] = (int(oc), int(oh), int(ow))
        head_flops = count_flops_and_output(partial(head, x))[0]
    return out_shapes, block_flops, head_flops


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
        seed: when given, parameters are initialised from a generator seeded with it, so two
            builds with one seed are equal, and the caller's global RNG state is left as it
            was; without it they draw from the global RNG, as PyTorch modules do.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with sizes >= 1, got {tuple(input_shape)}")
    c, h, w = shape
    config: dict[str, Any] = {
        "backbone": backbone,
        "num_classes": num_classes,
        "input_shape": [c, h, w],
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
    if (exits_after is None) == (distribution is None):
        raise ValueError("give exactly one of exits_after (block names) or distribution")
    if mean is not None or std is not None:
        if mean is None or std is None or len(mean) != c or len(std) != c:
            raise ValueError(f"mean and std need {c} values each, got {mean} and {std}")
    # Initialise from the seed without touching the caller's RNG: fork the CPU generator (the
    # model is built on the CPU), seed it, and hand the caller's state back afterwards.
    rng = fork_rng("cpu") if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            seed_rng(seed)
        net = _build(config, (c, h, w), exits_after, distribution, mean, std)
    return net


def _build(
    config: dict[str, Any],
    shape: Shape3,
    exits_after: Sequence[str] | None,
    distribution: str | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> MultiExitNet:
    backbone, num_classes = str(config["backbone"]), int(config["num_classes"])
    bb = build_backbone(backbone, num_classes, in_channels=shape[0], **config["backbone_options"])
    names = bb.block_names()

    # Probe every block once: output channels (for the heads) and FLOPs (for placement).
    out_shapes, block_flops, head_flops = _probe_blocks(bb.blocks, bb.head, shape)
    total = sum(block_flops) + head_flops

    placement: dict[str, Any] | None
    if distribution is not None:
        targets = target_fractions(distribution, int(config["num_side_exits"]))
        chosen, achieved = snap_to_blocks(names, block_flops, total, targets)
        placement = {"targets": targets, "achieved": achieved, "blocks": chosen}
    else:
        chosen = list(exits_after or [])
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

    stages: list[nn.Sequential] = []
    stage_blocks: list[list[str]] = []
    current: list[tuple[str, nn.Module]] = []
    for i, (name, block) in enumerate(bb.blocks):
        current.append((name, block))
        if name in chosen or i == len(bb.blocks) - 1:
            stage_blocks.append([n for n, _ in current])
            stages.append(nn.Sequential(*[m for _, m in current]))
            current = []
    if mean is not None and std is not None:
        stages[0] = nn.Sequential(Normalize(mean, std), *stages[0])
    exits = [
        build_exit_head(
            str(config["exit_head"]),
            out_shapes[n][0],
            num_classes,
            out_shapes[n],
            **config["exit_head_options"],
        )
        for n in chosen
    ]
    exits.append(bb.head)
    net = MultiExitNet(stages, exits, shape, num_classes, config, stage_blocks)
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
