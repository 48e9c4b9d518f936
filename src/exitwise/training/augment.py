"""Batched data augmentation on uint8 image tensors, drawn from a ``torch.Generator``.

Randomness is drawn once per batch (:func:`draw_params`) and applied by a pure function
(:func:`apply_params`), so a seeded generator reproduces the same batch exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentConfig", "AUGMENT_PRESETS", "augment_batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random affine and photometric changes; zeros switch a change off."""

    rotate_deg: float = 0.0
    scale: float = 0.0  # zoom in/out by up to this fraction
    translate: float = 0.0  # shift by up to this fraction of the image size
    brightness: float = 0.0  # multiply by 1 +- this
    contrast: float = 0.0
    hflip: bool = False  # wrong for traffic signs (left/right turn) and digits

    @property
    def is_identity(self) -> bool:
        return not (
            self.rotate_deg
            or self.scale
            or self.translate
            or self.brightness
            or self.contrast
            or self.hflip
        )


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    # traffic signs: no flips (left/right turn signs are different classes)
    "signs": AugmentConfig(rotate_deg=10, scale=0.1, translate=0.1, brightness=0.3, contrast=0.3),
    "digits": AugmentConfig(rotate_deg=10, scale=0.1, translate=0.1),
    "natural": AugmentConfig(scale=0.1, translate=0.125, brightness=0.2, contrast=0.2, hflip=True),
}


def augment_batch(images: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Augment a float batch ``(B, C, H, W)`` in [0, 1]; returns a new tensor in [0, 1].

    The random parameters (a few numbers per image) are drawn on the CPU from ``generator`` and
    applied where ``images`` are, so one seed gives the same augmentation on every device.
    """
    if cfg.is_identity or images.shape[0] == 0:
        return images
    b = images.shape[0]
    dev, dtype = images.device, images.dtype

    def uniform(r: float) -> Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * r

    angle = uniform(cfg.rotate_deg) * math.pi / 180
    scale = 1 + uniform(cfg.scale)
    tx, ty = uniform(cfg.translate) * 2, uniform(cfg.translate) * 2  # grid units span [-1, 1]
    flip = (
        (torch.rand(b, generator=generator) < 0.5)
        if cfg.hflip
        else torch.zeros(b, dtype=torch.bool)
    )
    bright, contrast = 1 + uniform(cfg.brightness), 1 + uniform(cfg.contrast)

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sx = torch.where(flip, -1.0, 1.0)
    theta = torch.stack(
        [torch.stack([cos * sx, -sin, tx], 1), torch.stack([sin * sx, cos, ty], 1)], 1
    ).to(device=dev, dtype=dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.view(-1, 1, 1, 1).to(device=dev, dtype=dtype) + mean
    out = out * bright.view(-1, 1, 1, 1).to(device=dev, dtype=dtype)
    return out.clamp_(0, 1)
