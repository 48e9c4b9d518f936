"""Common image corruptions for stress-testing early-exit networks (seed 000, Fig. 5).

Every corruption is a function with one signature::

    f(x: Tensor, level: float, generator: torch.Generator | None = None) -> Tensor

that works on a batch ``(B, C, H, W)`` of floating-point pixels in [0, 1]. The output has the
input's shape, dtype and device, is clipped to [0, 1], and is a new tensor (the input is never
mutated). Level 0 returns an identical copy. The random corruptions draw only from
``generator`` (the global RNG when it is ``None``), so the same seed gives the same images.

* :func:`gaussian_noise`: additive ``N(0, level^2)`` noise (``level`` = std).
* :func:`uniform_noise`: additive ``U(-level, level)`` noise.
* :func:`impulse_noise`: salt-and-pepper noise; ``level`` = fraction of pixels replaced, a
  replaced pixel is black or white in every channel.
* :func:`gaussian_blur`: Gaussian blur of standard deviation ``level`` pixels (the blur of seed
  002, Pacheco et al.), separable kernel of radius ``ceil(3 * level)``, reflect padding.

Each function has an ``nn.Module`` twin (:class:`GaussianNoise`, :class:`UniformNoise`,
:class:`ImpulseNoise`, :class:`GaussianBlur`), in the manner of kornia's ``gaussian_blur2d`` /
``GaussianBlur2d``, to drop into a transform pipeline. :data:`CORRUPTIONS` maps names to the
functions; :func:`corrupt` applies one by name.

Two level scales are provided:

* :data:`LEVEL_GRIDS`: dense grids from clean to unusable for curves of accuracy (and FLOPs)
  against the corruption level, plus ``seed002_blur``, the blur levels of seed 002.
* :data:`SEVERITIES`: the five severities of CIFAR-10-C (Hendrycks & Dietterich, "Benchmarking
  Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019), i.e. the
  constants of ``make_cifar_c.py`` for 32x32 images, where that benchmark has the corruption.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from exitwise.registry import Registry

__all__ = [
    "CorruptionFn",
    "CORRUPTIONS",
    "CORRUPTION_MODULES",
    "LEVEL_GRIDS",
    "SEVERITIES",
    "gaussian_noise",
    "uniform_noise",
    "impulse_noise",
    "gaussian_blur",
    "gaussian_kernel1d",
    "corrupt",
    "corruption_module",
    "Corruption",
    "GaussianNoise",
    "UniformNoise",
    "ImpulseNoise",
    "GaussianBlur",
]

CorruptionFn = Callable[[Tensor, float, "torch.Generator | None"], Tensor]

CORRUPTIONS: Registry[CorruptionFn] = Registry("corruption")


def _check(x: Tensor, level: float, name: str, max_level: float | None = None) -> float:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{name}: expected a 4-D batch (B, C, H, W), got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected floating-point pixels in [0, 1], got {x.dtype}")
    level = float(level)
    if not math.isfinite(level) or level < 0:
        raise ValueError(f"{name}: level must be a finite number >= 0, got {level}")
    if max_level is not None and level > max_level:
        raise ValueError(f"{name}: level must be <= {max_level}, got {level}")
    return level


def _check_generator(generator: torch.Generator | None, x: Tensor, name: str) -> None:
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(
            f"{name}: the generator is on {generator.device} but the images are on {x.device}; "
            "build it with torch.Generator(device=x.device)"
        )


@CORRUPTIONS.register("gaussian_noise")
def gaussian_noise(x: Tensor, level: float, generator: torch.Generator | None = None) -> Tensor:
    """Additive Gaussian noise of standard deviation ``level``, clipped to [0, 1].

    As the Gaussian noise of ImageNet-C / CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), where
    the CIFAR-10-C severities 1-5 are ``level`` = 0.04, 0.06, 0.08, 0.09, 0.10.

    Args:
        x: images in [0, 1].
        level: noise standard deviation (pixel units, [0, 1] scale); 0 gives a copy.
        generator: source of the noise (the global RNG when ``None``).

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``, same dtype and device.
    """
    level = _check(x, level, "gaussian_noise")
    if level == 0:
        return x.clone()
    _check_generator(generator, x, "gaussian_noise")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + level * noise).clamp_(0.0, 1.0)


@CORRUPTIONS.register("uniform_noise")
def uniform_noise(x: Tensor, level: float, generator: torch.Generator | None = None) -> Tensor:
    """Additive uniform noise ``U(-level, level)``, clipped to [0, 1].

    Its standard deviation is ``level / sqrt(3)``.

    Args:
        x: images in [0, 1].
        level: half-width of the noise interval; 0 gives a copy.
        generator: source of the noise (the global RNG when ``None``).

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``, same dtype and device.
    """
    level = _check(x, level, "uniform_noise")
    if level == 0:
        return x.clone()
    _check_generator(generator, x, "uniform_noise")
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + level * (2.0 * u - 1.0)).clamp_(0.0, 1.0)


@CORRUPTIONS.register("impulse_noise")
def impulse_noise(x: Tensor, level: float, generator: torch.Generator | None = None) -> Tensor:
    """Salt-and-pepper noise: a fraction ``level`` of the pixels turns black or white.

    Each pixel is hit independently with probability ``level``; a hit pixel becomes 0 (pepper)
    or 1 (salt) with equal probability, in every channel at once. (ImageNet-C / CIFAR-10-C's
    impulse noise, ``skimage.util.random_noise(mode="s&p")``, hits each channel value
    independently; the fractions are comparable.)

    Args:
        x: images in [0, 1].
        level: expected fraction of pixels replaced, in [0, 1]; 0 gives a copy.
        generator: source of the noise (the global RNG when ``None``).

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``, same dtype and device.
    """
    level = _check(x, level, "impulse_noise", max_level=1.0)
    if level == 0:
        return x.clone()
    _check_generator(generator, x, "impulse_noise")
    b, _, h, w = x.shape
    shape = (b, 1, h, w)
    hit = torch.rand(shape, generator=generator, device=x.device) < level
    salt = torch.rand(shape, generator=generator, device=x.device) < 0.5
    value = salt.to(x.dtype).expand_as(x)
    return torch.where(hit.expand_as(x), value, x).clamp_(0.0, 1.0)


def gaussian_kernel1d(
    sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """The normalised 1-D Gaussian kernel of standard deviation ``sigma``, radius ``ceil(3 sigma)``.

    Shape:
        output ``(2 * ceil(3 * sigma) + 1,)``, summing to 1.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = math.ceil(3.0 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _reflect_index(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices of a reflect-padded axis (``F.pad(mode="reflect")``, edge not repeated).

    Unlike ``F.pad``, the padding may be wider than the axis: the reflection repeats.
    """
    idx = torch.arange(-radius, n + radius, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.abs() % period
    return torch.where(idx >= n, period - idx, idx)


@CORRUPTIONS.register("gaussian_blur")
def gaussian_blur(x: Tensor, level: float, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur of standard deviation ``level`` pixels.

    The blur of seed 002 (Pacheco et al.), whose levels are ``LEVEL_GRIDS["seed002_blur"]``; the
    CIFAR-10-C severities (Hendrycks & Dietterich, ICLR 2019) are sigma = 0.4, 0.6, 0.7, 0.8, 1.
    A separable kernel of radius ``ceil(3 * level)`` is applied along rows then columns, with
    reflect padding (repeated when the kernel is wider than the image), so a constant image
    stays constant. Deterministic: ``generator`` is accepted for the common signature and unused.

    Args:
        x: images in [0, 1].
        level: blur standard deviation in pixels; 0 gives a copy.
        generator: unused.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``, same dtype and device.
    """
    level = _check(x, level, "gaussian_blur")
    if level == 0 or x.numel() == 0:
        return x.clone()
    b, c, h, w = x.shape
    kernel = gaussian_kernel1d(level, dtype=x.dtype, device=x.device)
    r = (kernel.numel() - 1) // 2
    y = x.reshape(b * c, 1, h, w)
    # rows: pad H by reflection, convolve with a (k, 1) kernel
    y = y.index_select(2, _reflect_index(h, r, x.device))
    y = F.conv2d(y, kernel.view(1, 1, -1, 1))
    # columns
    y = y.index_select(3, _reflect_index(w, r, x.device))
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    return y.reshape(b, c, h, w).clamp_(0.0, 1.0)


def corrupt(name: str, x: Tensor, level: float, generator: torch.Generator | None = None) -> Tensor:
    """Apply the registered corruption ``name`` (see :data:`CORRUPTIONS`) at ``level``.

    Shape:
        ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H, W)`` in [0, 1].
    """
    return CORRUPTIONS.get(name)(x, level, generator)


class Corruption(nn.Module):
    """Base of the module twins: ``forward(x, generator=None)`` calls the function.

    Args:
        level: the corruption level (see the function).
        seed: when given and no generator is passed to ``forward``, every call builds a fresh
            generator seeded with it, so the module gives the same output on every call.

    Shape:
        ``(B, C, H, W)`` in [0, 1] -> ``(B, C, H, W)`` in [0, 1].
    """

    fn: Callable[..., Tensor]
    name: str

    def __init__(self, level: float, seed: int | None = None) -> None:
        super().__init__()
        if not math.isfinite(float(level)) or float(level) < 0:
            raise ValueError(f"level must be a finite number >= 0, got {level}")
        self.level = float(level)
        self.seed = seed

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if generator is None and self.seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return type(self).fn(x, self.level, generator)

    def extra_repr(self) -> str:
        return f"level={self.level}" + (f", seed={self.seed}" if self.seed is not None else "")


class GaussianNoise(Corruption):
    """Module twin of :func:`gaussian_noise` (``level`` = noise std)."""

    fn = staticmethod(gaussian_noise)
    name = "gaussian_noise"


class UniformNoise(Corruption):
    """Module twin of :func:`uniform_noise` (noise ``U(-level, level)``)."""

    fn = staticmethod(uniform_noise)
    name = "uniform_noise"


class ImpulseNoise(Corruption):
    """Module twin of :func:`impulse_noise` (``level`` = fraction of pixels replaced)."""

    fn = staticmethod(impulse_noise)
    name = "impulse_noise"


class GaussianBlur(Corruption):
    """Module twin of :func:`gaussian_blur` (``level`` = sigma in pixels; ``seed`` is unused).

    Like kornia's ``GaussianBlur2d`` with kernel size ``2 * ceil(3 sigma) + 1`` and reflect
    border.
    """

    fn = staticmethod(gaussian_blur)
    name = "gaussian_blur"


CORRUPTION_MODULES: dict[str, type[Corruption]] = {
    cls.name: cls for cls in (GaussianNoise, UniformNoise, ImpulseNoise, GaussianBlur)
}


def corruption_module(name: str, level: float, seed: int | None = None) -> Corruption:
    """The module twin of the corruption ``name`` at ``level``."""
    CORRUPTIONS.get(name)  # raises a helpful KeyError for unknown names
    return CORRUPTION_MODULES[name](level, seed=seed)


#: Level grids from clean (0) to unusable, for robustness curves. ``seed002_blur`` are the blur
#: sigmas of seed 002 (Pacheco et al.); the others span each corruption until the image content
#: is mostly destroyed on 32x32 inputs (noise std 0.5; uniform half-width 0.8; half the pixels
#: replaced; blur sigma 3, i.e. a 19-pixel kernel).
LEVEL_GRIDS: dict[str, tuple[float, ...]] = {
    "seed002_blur": (0.0, 0.1, 0.2, 0.5, 0.8, 0.9, 1.0, 1.2, 1.5, 1.8),
    "gaussian_noise": (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    "uniform_noise": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "impulse_noise": (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5),
    "gaussian_blur": (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0),
}

#: CIFAR-10-C severities 1-5 (Hendrycks & Dietterich, ICLR 2019; the constants of
#: ``make_cifar_c.py`` in github.com/hendrycks/robustness, for 32x32 images):
#: ``gaussian_noise`` std, ``impulse_noise`` s&p amount, ``gaussian_blur`` sigma (one of the
#: extra corruptions released with CIFAR-10-C; skimage's kernel is truncated at 4 sigma, ours
#: at 3). CIFAR-10-C has no uniform noise: its severities here are the half-widths whose std
#: (``a / sqrt(3)``) equals the Gaussian noise std of the same severity, ``sqrt(3) * std``.
#: (ImageNet-C, for 224x224 images, uses larger values: noise std 0.08-0.38, s&p 0.03-0.27,
#: blur sigma 1-6.)
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "uniform_noise": tuple(round(math.sqrt(3.0) * s, 4) for s in (0.04, 0.06, 0.08, 0.09, 0.10)),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
}
