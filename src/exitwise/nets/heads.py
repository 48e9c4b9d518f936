"""Exit heads: the small classifiers attached after a block.

Convention: an exit head maps a feature map ``(B, C, H, W)`` to logits ``(B, num_classes)``.
Heads that also learn an exit confidence (EENets) return ``(logits, confidence)`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from exitwise.registry import Registry

__all__ = ["EXIT_HEADS", "ConvPoolHead", "PoolHead", "build_exit_head"]

ExitHeadFactory = Callable[..., nn.Module]
EXIT_HEADS: Registry[ExitHeadFactory] = Registry("exit head")


class PoolHead(nn.Sequential):
    """Global average pooling + linear layer: the cheapest useful exit."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_channels, num_classes)
        )


class ConvPoolHead(nn.Sequential):
    """BranchyNet-style exit (Teerapittayanon et al., 2016): conv-BN-ReLU, pooling, linear.

    Args:
        in_channels: channels of the feature map the exit reads.
        num_classes: output classes.
        width: channels of the head's convolution (default: ``in_channels``).
        stride: stride of the convolution; 2 quarters its cost on large feature maps.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int | None = None, stride: int = 2
    ) -> None:
        width = width or in_channels
        super().__init__(
            nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(width, num_classes),
        )


EXIT_HEADS.register(
    "pool", lambda in_channels, num_classes, **kw: PoolHead(in_channels, num_classes, **kw)
)
EXIT_HEADS.register(
    "branchy", lambda in_channels, num_classes, **kw: ConvPoolHead(in_channels, num_classes, **kw)
)


def build_exit_head(kind: str, in_channels: int, num_classes: int, **options) -> nn.Module:
    """Build a registered exit head (``EXIT_HEADS.names()`` lists the kinds)."""
    return EXIT_HEADS.get(kind)(in_channels, num_classes, **options)


def head_output_logits(out: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """The logits of an exit head's output, whether or not it also returns a confidence."""
    return out[0] if isinstance(out, tuple) else out
