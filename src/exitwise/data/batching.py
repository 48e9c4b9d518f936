"""Batches from an in-memory dataset: shuffled by a generator, on the device that computes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from exitwise.data.base import ArrayDataset

__all__ = ["iterate_batches"]


def iterate_batches(
    data: ArrayDataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(images, labels)`` batches: float32 images in [0, 1] and int64 labels.

    The order is shuffled by ``generator`` (a CPU generator; the same seed gives the same order
    on every device) or kept when it is ``None``. The uint8 pixels travel to ``device`` (default:
    stay on the CPU) before they are converted, a quarter of the bytes of float32; on CUDA they
    go through pinned memory without blocking the host.

    Shape:
        images ``(B, C, H, W)``, labels ``(B,)``; the last batch may be smaller unless
        ``drop_last``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    pin = dev.type == "cuda"
    n = len(data)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        images, labels = data.images[idx], data.labels[idx]  # copies: the dataset stays as is
        if dev.type != "cpu":
            if pin:
                images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(dev, non_blocking=pin)
            labels = labels.to(dev, non_blocking=pin)
        yield images.float().div_(255), labels
