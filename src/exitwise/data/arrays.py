"""``npz``: any dataset stored as arrays in one or more .npz files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import DATASETS, DatasetSplits, make_splits, to_nchw

logger = logging.getLogger(__name__)

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("group_train", "track_train", "class_names")


def read_npz_arrays(files: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Read the known keys from ``files`` (``allow_pickle=False``), concatenating each key in order.

    A key may live in only some of the files (e.g. train in two parts, test in a third); every
    required key must be found in at least one.
    """
    parts: dict[str, list[np.ndarray]] = {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(
                f"npz: {path.resolve()} does not exist; pass root=<file.npz> or a list of .npz "
                f"files holding the keys {list(REQUIRED)}"
            )
        with np.load(path, allow_pickle=False) as z:
            for key in REQUIRED + OPTIONAL:
                if key in z.files:
                    parts.setdefault(key, []).append(z[key])
    missing = [k for k in REQUIRED if k not in parts]
    if missing:
        raise KeyError(
            f"npz: the files {[str(f) for f in files]} lack the keys {missing}; expected "
            f"{list(REQUIRED)} (images uint8 (N, H, W, C) or (N, C, H, W), integer labels (N,)), "
            f"optionally {list(OPTIONAL[:2])} for a grouped validation split"
        )
    arrays = {k: v[0] if k == "class_names" else np.concatenate(v) for k, v in parts.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"npz: y_{split} must be integer labels of shape ({x.shape[0]},) to match "
                f"x_{split} {x.shape}, got {y.dtype} {y.shape}"
            )
        if len(y) and y.min() < 0:
            raise ValueError(f"npz: y_{split} has negative labels (min {y.min()}); expected 0..K-1")
    for key in ("group_train", "track_train"):
        if key in arrays and arrays[key].shape[0] != arrays["x_train"].shape[0]:
            raise ValueError(
                f"npz: {key} has {arrays[key].shape[0]} entries for "
                f"{arrays['x_train'].shape[0]} training images; give one per image"
            )
    return arrays


def train_groups(arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """Group ids for the validation split: ``group_train``, else ``(label, track)`` rows."""
    if "group_train" in arrays:
        return arrays["group_train"]
    if "track_train" in arrays:  # GTSRB numbers tracks within each class
        return np.stack([arrays["y_train"], arrays["track_train"]], 1).astype(np.int64)
    return None


def splits_from_arrays(
    name: str,
    arrays: dict[str, np.ndarray],
    *,
    seed: int,
    val_fraction: float,
    layout: str = "auto",
    class_names: Sequence[str] | None = None,
) -> DatasetSplits:
    """Turn arrays read by :func:`read_npz_arrays` into splits (grouped split when groups exist)."""
    x_train, found = to_nchw(arrays["x_train"], layout, f"{name}: x_train")
    x_test, found_test = to_nchw(arrays["x_test"], layout, f"{name}: x_test")
    logger.info("%s: images stored as %s (train), %s (test)", name, found, found_test)
    y_train, y_test = arrays["y_train"].astype(np.int64), arrays["y_test"].astype(np.int64)
    if class_names is None and "class_names" in arrays:
        class_names = [str(c) for c in arrays["class_names"]]
    n = max(int(y_train.max(initial=-1)), int(y_test.max(initial=-1))) + 1
    if class_names is None:
        class_names = [str(i) for i in range(n)]
    elif len(class_names) < n:
        raise ValueError(f"{name}: labels reach {n - 1} but only {len(class_names)} class names")
    return make_splits(
        name, x_train, y_train, x_test, y_test, class_names,
        seed=seed, val_fraction=val_fraction, groups=train_groups(arrays),
    )  # fmt: skip


@DATASETS.register("npz")
def npz(
    root: str | Path | Sequence[str | Path] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    layout: str = "auto",
    class_names: Sequence[str] | None = None,
) -> DatasetSplits:
    """Arrays from .npz files: ``x_train, y_train, x_test, y_test``, optional groups.

    Args:
        root: an .npz file, or a list of files whose arrays are concatenated key by key in order.
        seed: seed of the validation split.
        val_fraction: share of train kept for validation; whole groups move when groups exist
            (``group_train`` as is; ``track_train`` as ``(label, track)`` pairs).
        layout: ``"auto"`` detects HWC or CHW (logged); force with ``"hwc"`` / ``"chw"``.
        class_names: names of the classes; default the file's ``class_names`` key, else "0", "1"...
    """
    if root is None:
        raise ValueError(
            "npz: pass root=<path/to/file.npz> (or a list of files) holding the keys "
            f"{list(REQUIRED)}"
        )
    files = [root] if isinstance(root, (str, Path)) else list(root)
    arrays = read_npz_arrays(files)
    return splits_from_arrays(
        "npz", arrays, seed=seed, val_fraction=val_fraction, layout=layout, class_names=class_names
    )
