"""Exit heads: the small classifiers attached after a block.

Convention: an exit head maps a feature map ``(B, C, H, W)`` to logits ``(B, num_classes)``.
Heads that also learn an exit confidence (EENets) return ``(logits, confidence)`` instead and
have ``has_confidence = True``. Factories receive ``feature_shape=(C, H, W)`` of the map they read.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from exitwise.registry import Registry

__all__ = ["EXIT_HEADS", "ConvPoolHead", "PoolHead", "EENetsExit", "build_exit_head"]

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


class EENetsExit(nn.Module):
    """EENets exit block (Demir & Akbas): a classification branch and a confidence branch.

    Variants of the reference implementation: ``plain`` (both branches read the flattened feature
    map), ``pool`` (global average pooling first) and ``bnpool`` (batch norm, then pooling).

    Returns:
        ``(logits (B, num_classes), confidence (B, 1) in [0, 1])``.
    """

    has_confidence = True

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        feature_shape: tuple[int, int, int] | None = None,
        variant: str = "bnpool",
    ) -> None:
        super().__init__()
        if variant not in ("plain", "pool", "bnpool"):
            raise ValueError(f"EENets exit variant must be plain, pool or bnpool, got {variant!r}")
        if variant == "plain":
            if feature_shape is None:
                raise ValueError("the 'plain' EENets exit needs feature_shape=(C, H, W)")
            features = in_channels * feature_shape[1] * feature_shape[2]
            self.body: nn.Module = nn.Flatten(1)
        else:
            features = in_channels
            layers = [nn.BatchNorm2d(in_channels)] if variant == "bnpool" else []
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.variant = variant
        self.classifier = nn.Linear(features, num_classes)
        self.confidence = nn.Sequential(nn.Linear(features, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.classifier(h), self.confidence(h)


def _ignoring_shape(cls: type[nn.Module]) -> ExitHeadFactory:
    def factory(in_channels: int, num_classes: int, feature_shape=None, **kw) -> nn.Module:
        return cls(in_channels, num_classes, **kw)

    return factory


EXIT_HEADS.register("pool", _ignoring_shape(PoolHead))
EXIT_HEADS.register("branchy", _ignoring_shape(ConvPoolHead))
EXIT_HEADS.register("eenets", EENetsExit)


def build_exit_head(
    kind: str,
    in_channels: int,
    num_classes: int,
    feature_shape: tuple[int, int, int] | None = None,
    **options,
) -> nn.Module:
    """Build a registered exit head (``EXIT_HEADS.names()`` lists the kinds)."""
    factory = EXIT_HEADS.get(kind)
    try:
        return factory(in_channels, num_classes, feature_shape=feature_shape, **options)
    except TypeError as e:
        raise ValueError(f"exit head {kind!r}: bad options {options}: {e}") from None
