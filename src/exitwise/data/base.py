"""Core data types: in-memory uint8 datasets, the splits bundle, grouped splitting, the registry."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from exitwise.registry import Registry

logger = logging.getLogger(__name__)

DATASETS: Registry[Callable[..., DatasetSplits]] = Registry("dataset")
"""Dataset name -> factory ``f(root, *, seed, val_fraction, **options) -> DatasetSplits``."""


@dataclass(eq=False, repr=False)
class ArrayDataset(Dataset):
    """A labelled image set held in memory as uint8, the layout the trainer samples batches from.

    Args:
        images: uint8 tensor ``(N, C, H, W)`` (numpy arrays are converted); stored contiguous.
        labels: int64 tensor ``(N,)`` (any integer numpy/torch dtype is converted).

    Shape:
        ``self[i]`` returns a float32 image ``(C, H, W)`` in [0, 1] and an ``int`` label.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if isinstance(labels, np.ndarray):
            labels = torch.from_numpy(np.ascontiguousarray(labels))
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            got = f"{type(images).__name__} {getattr(images, 'dtype', '')} "
            got += f"{tuple(getattr(images, 'shape', ()))}"
            raise TypeError(
                f"ArrayDataset.images must be a uint8 tensor of shape (N, C, H, W), got {got}. "
                "Convert floats with (x * 255).round().clamp(0, 255).to(torch.uint8) and HWC "
                "arrays with x.permute(0, 3, 1, 2)."
            )
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
            raise TypeError(
                f"ArrayDataset.labels must be a 1-D integer tensor, got "
                f"{type(labels).__name__} of shape {tuple(getattr(labels, 'shape', ()))}"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"ArrayDataset.labels must hold integers, got dtype {labels.dtype}")
        if len(labels) != len(images):
            raise ValueError(
                f"ArrayDataset has {len(images)} images but {len(labels)} labels; they must match"
            )
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64).contiguous()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return f"ArrayDataset(n={len(self)}, image_shape={tuple(self.images.shape[1:])})"

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div_(255.0), int(self.labels[i])


@dataclass(eq=False)
class DatasetSplits:
    """Train / validation / test splits of one dataset, plus what a model needs to know about it.

    ``mean`` and ``std`` are per-channel statistics of the *train* split in [0, 1].
    """

    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        shapes = {s: tuple(getattr(self, s).images.shape[1:]) for s in ("train", "val", "test")}
        if len({v for k, v in shapes.items() if len(getattr(self, k))}) > 1:
            raise ValueError(f"{self.name}: splits disagree on the image shape {shapes}")
        for split in ("train", "val", "test"):
            labels = getattr(self, split).labels
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"{self.name}: {split} labels span {int(labels.min())}..{int(labels.max())}, "
                    f"expected 0..{self.num_classes - 1}"
                )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


def check_val_fraction(val_fraction: float) -> float:
    """Return ``val_fraction`` as a float, raising if it is not strictly between 0 and 1."""
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(
            f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}; "
            "0.1 keeps 10% of the training images for validation"
        )
    return float(val_fraction)


def _stratified(
    strata: np.ndarray, sizes: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Pick units for validation, per stratum, so each stratum's picked size ~ fraction of it.

    Args:
        strata: stratum (label) of each unit, ``(U,)``.
        sizes: number of images in each unit, ``(U,)``.
        fraction: wanted share of images in the validation part.
        rng: source of the shuffles.

    Returns:
        Boolean mask ``(U,)`` of the units that go to validation.
    """
    picked = np.zeros(len(strata), dtype=bool)
    classes = np.unique(strata)
    totals = np.array([sizes[strata == c].sum() for c in classes], dtype=np.float64)
    # Largest-remainder rounding, so the whole validation part is round(N * fraction) images.
    want = totals * fraction
    base = np.floor(want)
    extra = int(round(want.sum() - base.sum()))
    order = np.lexsort((rng.permutation(len(classes)), -(want - base)))
    base[order[:extra]] += 1
    for c, target in zip(classes, base, strict=True):
        units = np.flatnonzero(strata == c)
        if len(units) < 2 or target <= 0:
            continue  # a class with a single unit keeps it in train
        units = units[rng.permutation(len(units))]
        cum = np.cumsum(sizes[units])
        # The prefix whose size is closest to the target; train keeps at least one unit.
        k = min(int(np.argmin(np.abs(cum - target))) + 1, len(units) - 1)
        picked[units[:k]] = True
    return picked


def split_by_group(
    labels: np.ndarray | torch.Tensor | Sequence[int],
    groups: np.ndarray | torch.Tensor | Sequence | None,
    val_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and validation, stratified by label and never splitting a group.

    With ``groups=None`` every image is its own group: a plain stratified split. Otherwise whole
    groups (e.g. GTSRB tracks: 30 frames of one physical sign) go to one side, so near-duplicates
    cannot leak from train into validation; groups are stratified by their most common label.

    Args:
        labels: class of each image, ``(N,)``.
        groups: group id of each image, ``(N,)`` (numbers or strings, or rows of them), or None.
        val_fraction: share of images for validation, in (0, 1).
        seed: seed of the shuffle; the same inputs and seed always give the same split.

    Returns:
        ``(train_idx, val_idx)``, sorted int64 index arrays that together cover ``range(N)``.
    """
    fraction = check_val_fraction(val_fraction)
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    if groups is None:
        mask = _stratified(labels, np.ones(len(labels), dtype=np.int64), fraction, rng)
        return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)
    groups = np.asarray(groups)
    if groups.shape[0] != labels.shape[0]:
        raise ValueError(
            f"split_by_group: {groups.shape[0]} group ids for {labels.shape[0]} labels; "
            "give one group id per image"
        )
    if groups.ndim == 2:  # composite keys such as (label, track) rows
        _, gid = np.unique(groups, axis=0, return_inverse=True)
    else:
        _, gid = np.unique(groups, return_inverse=True)
    gid = gid.reshape(-1)
    n_groups = int(gid.max()) + 1 if len(gid) else 0
    sizes = np.bincount(gid, minlength=n_groups)
    # Each group's stratum is its most common label.
    _, lab = np.unique(labels, return_inverse=True)
    counts = np.zeros((n_groups, int(lab.max()) + 1 if len(lab) else 0), dtype=np.int64)
    np.add.at(counts, (gid, lab.reshape(-1)), 1)
    strata = counts.argmax(axis=1)
    picked = _stratified(strata, sizes, fraction, rng)
    mask = picked[gid]
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std in [0, 1] of uint8 images ``(N, C, H, W)``, in float64 chunks."""
    c = images.shape[1]
    total, total_sq = np.zeros(c), np.zeros(c)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].numpy().astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        total_sq += np.square(x).sum(axis=(0, 2, 3))
    n = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def to_nchw(x: np.ndarray, layout: str = "auto", what: str = "images") -> tuple[np.ndarray, str]:
    """Bring a uint8 image array to ``(N, C, H, W)``.

    Args:
        x: ``(N, H, W)`` grey, ``(N, H, W, C)`` or ``(N, C, H, W)`` with C in {1, 3, 4}.
        layout: ``"auto"`` (detect), ``"hwc"`` or ``"chw"``.
        what: name used in error messages.

    Returns:
        The contiguous array and the layout that was used (``"hw"``, ``"hwc"`` or ``"chw"``).
    """
    if x.dtype != np.uint8:
        raise TypeError(
            f"{what}: expected uint8 pixels in 0..255, got dtype {x.dtype}; convert with "
            "(x * 255).round().clip(0, 255).astype(np.uint8) if they are floats in [0, 1]"
        )
    if x.ndim == 3:
        return np.ascontiguousarray(x[:, None]), "hw"
    if x.ndim != 4:
        raise ValueError(f"{what}: expected (N, H, W, C) or (N, C, H, W), got shape {x.shape}")
    if layout == "auto":
        hwc, chw = x.shape[3] in (1, 3, 4), x.shape[1] in (1, 3, 4)
        if hwc == chw:
            raise ValueError(
                f"{what}: cannot tell whether shape {x.shape} is HWC or CHW; "
                "pass layout='hwc' or layout='chw'"
            )
        layout = "hwc" if hwc else "chw"
    if layout not in ("hwc", "chw"):
        raise ValueError(f"layout must be 'auto', 'hwc' or 'chw', got {layout!r}")
    if layout == "hwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), layout


def make_splits(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: Sequence[str],
    *,
    seed: int,
    val_fraction: float,
    groups: np.ndarray | None = None,
) -> DatasetSplits:
    """Carve validation out of train (by group when given) and bundle everything.

    ``x_*`` are uint8 ``(N, C, H, W)``; ``y_*`` integer labels ``(N,)``.
    """
    train_idx, val_idx = split_by_group(y_train, groups, val_fraction, seed)
    y_train = np.asarray(y_train, dtype=np.int64)
    train = ArrayDataset(torch.from_numpy(x_train[train_idx]), torch.from_numpy(y_train[train_idx]))
    val = ArrayDataset(torch.from_numpy(x_train[val_idx]), torch.from_numpy(y_train[val_idx]))
    test = ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(x_test)),
        torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
    )
    mean, std = channel_stats(train.images)
    logger.info(
        "%s: %d train, %d val, %d test images of shape %s",
        name,
        len(train),
        len(val),
        len(test),
        tuple(train.images.shape[1:]),
    )
    return DatasetSplits(name, train, val, test, len(class_names), list(class_names), mean, std)


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    **options,
) -> DatasetSplits:
    """Load a registered dataset into memory as train / val / test splits.

    Args:
        name: registered name (``exitwise.data.DATASETS.names()`` lists them).
        root: where the files are; each dataset documents its default.
        seed: seed of the validation split (and of the generator, for synthetic data).
        val_fraction: share of the training split kept for validation, in (0, 1).
        **options: dataset-specific options, e.g. ``image_size``.

    Returns:
        The splits, validation carved from train with ``seed``; test is the official test split.
    """
    factory = DATASETS.get(name)
    check_val_fraction(val_fraction)
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(accepted) - {"seed", "val_fraction"})
        if unknown:
            raise TypeError(
                f"dataset {name!r} does not take the options {unknown}; it accepts "
                f"{[k for k in accepted if k not in ('seed', 'val_fraction')]}"
            )
    return factory(root, seed=seed, val_fraction=val_fraction, **options)
