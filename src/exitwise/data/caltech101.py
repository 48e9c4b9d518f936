"""``caltech101``: Caltech-101 (Fei-Fei, Fergus and Perona, 2004), 101 object classes.

Layer: data (floor 2). Reads the folder shipped in ``../shared/data/caltech101``:
``101_ObjectCategories/<class>/image_NNNN.jpg`` (shorter side 128 px) and the fixed split lists
``train.txt`` / ``test.txt`` (``class/image_NNNN.jpg`` per line, disjoint, ~2:1 per class). The
background class is not part of it. Labels are the class folders in sorted order; validation is
carved out of train, stratified by class, never out of test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DATASETS, DatasetSplits, make_splits
from .files import default_root, load_npz, not_found, read_images, save_npz_atomic

ENV = "EXITWISE_CALTECH101_DIR"
SPLIT_FILES = ("train.txt", "test.txt")
IMAGES = "101_ObjectCategories"
HOW_TO_GET = (
    "Set EXITWISE_CALTECH101_DIR or pass root= to a folder holding 101_ObjectCategories/ and the "
    "split lists train.txt and test.txt (one 'class/image_NNNN.jpg' per line)."
)


def _read_list(path: Path, images: Path) -> list[str]:
    """The relative image paths listed in a split file, checked against the folder."""
    entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [e for e in entries if e.count("/") != 1]
    if bad:
        raise ValueError(
            f"caltech101: {path} line {entries.index(bad[0]) + 1} reads {bad[0]!r}; expected "
            "'class/image_NNNN.jpg'"
        )
    missing = [e for e in entries if not (images / e).is_file()]
    if missing:
        raise not_found(
            "caltech101", f"{len(missing)} images listed in {path.name}, e.g. {missing[0]}",
            images, HOW_TO_GET,
        )  # fmt: skip
    return entries


@DATASETS.register("caltech101")
def caltech101(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    image_size: int = 96,
    crop: bool = True,
    cache_dir: str | Path | None = None,
) -> DatasetSplits:
    """Caltech-101 with its fixed split: 5,784 train (minus validation) and 2,893 test images.

    Args:
        root: folder with ``101_ObjectCategories/``, ``train.txt`` and ``test.txt``; default
            ``$EXITWISE_CALTECH101_DIR``, else ``../shared/data/caltech101``.
        seed: seed of the (stratified) validation split carved from train.
        val_fraction: share of the training images kept for validation.
        image_size: side of the square RGB images (the files' shorter side is 128 px).
        crop: centre-crop to a square before resizing (keeps the aspect ratio); else squash.
        cache_dir: if given, the decoded arrays are saved there as .npz and reused.
    """
    root = default_root(root, ENV, Path("..") / "shared" / "data" / "caltech101")
    images = root / IMAGES
    if not images.is_dir() or not all((root / f).is_file() for f in SPLIT_FILES):
        raise not_found("caltech101", f"{IMAGES}/ and {list(SPLIT_FILES)}", root, HOW_TO_GET)
    classes = sorted(p.name for p in images.iterdir() if p.is_dir())
    index = {name: i for i, name in enumerate(classes)}
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"caltech101_{len(classes)}cls_{image_size}px_crop{int(crop)}.npz"
    keys = ("x_train", "y_train", "x_test", "y_test")
    if cache is not None and cache.is_file():
        arrays = load_npz(cache, keys)
    else:
        arrays = {}
        for split, listing in zip(("train", "test"), SPLIT_FILES, strict=True):
            entries = _read_list(root / listing, images)
            unknown = sorted({e.split("/")[0] for e in entries} - index.keys())
            if unknown:
                raise ValueError(
                    f"caltech101: {listing} names classes with no folder in {images}: {unknown[:5]}"
                )
            arrays[f"x_{split}"] = read_images([images / e for e in entries], image_size, crop)
            arrays[f"y_{split}"] = np.asarray(
                [index[e.split("/")[0]] for e in entries], dtype=np.int64
            )
        if cache is not None:
            save_npz_atomic(cache, **arrays)
    return make_splits(
        "caltech101", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        [c.replace("_", " ") for c in classes], seed=seed, val_fraction=val_fraction,
    )  # fmt: skip
