"""Backbones cut into blocks: every residual / inverted-residual block is a place an exit can go.

A backbone factory returns a :class:`Backbone`: an ordered list of named blocks and the backbone's
own classifier (``head``), which becomes the last exit of a multi-exit network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from exitwise.registry import Registry

__all__ = ["BACKBONES", "Backbone", "build_backbone", "CifarResNet"]


@dataclass
class Backbone:
    """A backbone as ordered named blocks plus its own classifier head."""

    name: str
    blocks: list[tuple[str, nn.Module]]
    head: nn.Module

    def block_names(self) -> list[str]:
        return [n for n, _ in self.blocks]


BackboneFactory = Callable[..., Backbone]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def build_backbone(name: str, num_classes: int, in_channels: int = 3, **options) -> Backbone:
    """Build a registered backbone by name.

    Args:
        name: registry name (``exitwise.nets.BACKBONES.names()`` lists them).
        num_classes: classes of the final classifier.
        in_channels: image channels (1 for MNIST, 3 for RGB).
        **options: backbone-specific options (e.g. ``stem="cifar"`` for ``resnet18``).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    return BACKBONES.get(name)(num_classes=num_classes, in_channels=in_channels, **options)


def _pool_linear_head(classifier: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), classifier)


@BACKBONES.register("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, stem: str = "imagenet") -> Backbone:
    """torchvision's ResNet-18 (He et al., 2016) with an ``imagenet``, ``half`` or ``cifar`` stem.

    ``imagenet`` (torchvision's own): 7x7/2 convolution + 3x3/2 max-pool, feature maps at 1/4 of
    the input. ``cifar``: one 3x3/1 convolution, no max-pool, maps at full input size (the usual
    choice for 32x32 inputs; 15x the FLOPs of ``imagenet``). ``half``: 3x3/1 convolution + 3x3/2
    max-pool, maps at 1/2 (about 4x cheaper than ``cifar``).
    """
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if stem in ("cifar", "half"):
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if stem == "cifar":
            net.maxpool = nn.Identity()
    elif stem == "imagenet":
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        raise ValueError(f"resnet18 stem must be 'imagenet', 'half' or 'cifar', got {stem!r}")
    blocks: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool))
    ]
    for li in range(1, 5):
        layer = getattr(net, f"layer{li}")
        blocks += [(f"layer{li}.{bi}", block) for bi, block in enumerate(layer)]
    return Backbone("resnet18", blocks, _pool_linear_head(net.fc))


@BACKBONES.register("mobilenet_v2")
def mobilenet_v2(
    num_classes: int, in_channels: int = 3, width_mult: float = 1.0, stem_stride: int = 2
) -> Backbone:
    """torchvision's MobileNetV2 (Sandler et al., 2018); one block per inverted residual.

    ``stem_stride=1`` keeps more resolution for small (32x32) inputs.
    """
    net = torchvision.models.mobilenet_v2(
        weights=None, num_classes=num_classes, width_mult=width_mult
    )
    stem_conv = net.features[0][0]
    if in_channels != 3 or stem_stride != 2:
        net.features[0][0] = nn.Conv2d(
            in_channels, stem_conv.out_channels, 3, stride=stem_stride, padding=1, bias=False
        )
    feats = list(net.features)
    blocks = [("stem", feats[0])] + [(f"features.{i}", m) for i, m in enumerate(feats) if i > 0]
    return Backbone("mobilenet_v2", blocks, _pool_linear_head(net.classifier))


class _CifarBasicBlock(nn.Module):
    """3x3-3x3 residual block with the parameter-free option-A shortcut (He et al., 2016, 4.2)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = x[:, :, :: self.stride, :: self.stride]
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """The 6n+2-layer CIFAR ResNet (He et al., 2016, sec. 4.2): 16-32-64 channels, n blocks each."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for bi in range(n):
                blocks.append(_CifarBasicBlock(in_planes, planes, stride if bi == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.head = _pool_linear_head(nn.Linear(64, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def _cifar_resnet(depth: int) -> BackboneFactory:
    def factory(num_classes: int, in_channels: int = 3) -> Backbone:
        net = CifarResNet(depth, num_classes, in_channels)
        blocks: list[tuple[str, nn.Module]] = [("stem", net.stem)]
        for li in range(1, 4):
            layer = getattr(net, f"layer{li}")
            blocks += [(f"layer{li}.{bi}", block) for bi, block in enumerate(layer)]
        return Backbone(f"resnet{depth}", blocks, net.head)

    factory.__doc__ = f"CIFAR ResNet-{depth} (6n+2, n={(depth - 2) // 6}), He et al. 2016."
    return factory


for _depth in (20, 32, 44, 56, 110):
    BACKBONES.register(f"resnet{_depth}", _cifar_resnet(_depth))
