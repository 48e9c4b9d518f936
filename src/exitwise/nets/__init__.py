"""Multi-exit networks: backbones, exit heads, exit placement and ``MultiExitNet``."""

from exitwise.nets.backbones import BACKBONES, Backbone, build_backbone
from exitwise.nets.heads import EXIT_HEADS, ConvPoolHead, EENetsExit, PoolHead, build_exit_head
from exitwise.nets.modes import eval_mode
from exitwise.nets.multi_exit import (
    PRESETS,
    CloudPart,
    EdgePart,
    ExitOutput,
    MultiExitNet,
    Normalize,
    as_exit_output,
    build_multi_exit,
    build_preset,
    measure_costs,
)
from exitwise.nets.placement import DISTRIBUTIONS, snap_to_blocks, target_fractions

__all__ = [
    "BACKBONES",
    "Backbone",
    "build_backbone",
    "EXIT_HEADS",
    "ConvPoolHead",
    "EENetsExit",
    "PoolHead",
    "build_exit_head",
    "PRESETS",
    "CloudPart",
    "EdgePart",
    "ExitOutput",
    "as_exit_output",
    "eval_mode",
    "MultiExitNet",
    "Normalize",
    "build_multi_exit",
    "build_preset",
    "measure_costs",
    "DISTRIBUTIONS",
    "snap_to_blocks",
    "target_fractions",
]
