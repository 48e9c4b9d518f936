"""``gtsrb``: the German Traffic Sign Recognition Benchmark (Stallkamp et al., 2012), 43 classes.

Two on-disk forms are read: the 32x32 .npz trio (``gtsrb32_train_part1.npz``,
``gtsrb32_train_part2.npz``, ``gtsrb32_test.npz``) and torchvision's ``GTSRB`` folder layout
(``gtsrb/GTSRB/Training/000NN/TTTTT_FFFFF.ppm``, ``gtsrb/GTSRB/Final_Test/Images/*.ppm``,
``gtsrb/GT-final_test.csv``). Each training track holds ~30 frames of one physical sign, so the
validation split moves whole ``(label, track)`` groups: a per-image split leaks near-duplicates.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import numpy as np

from .arrays import read_npz_arrays, splits_from_arrays
from .base import DATASETS, DatasetSplits, make_splits
from .files import default_root, not_found, read_images, resize_nchw
from .sign_templates import CLASS_NAMES

logger = logging.getLogger(__name__)

NPZ_FILES = ("gtsrb32_train_part1.npz", "gtsrb32_train_part2.npz", "gtsrb32_test.npz")
HOW_TO_GET = (
    "Set EXITWISE_GTSRB_DIR or pass root= to a folder with the three .npz files "
    f"{list(NPZ_FILES)}, or to the parent of torchvision's 'gtsrb' folder (get it on a machine "
    "with internet with load_dataset('gtsrb', root, download=True))."
)


def _folder(root: Path) -> Path | None:
    """The torchvision ``gtsrb`` folder under ``root`` (or ``root`` itself), if it exists."""
    for base in (root / "gtsrb", root):
        if (base / "GTSRB" / "Training").is_dir():
            return base
    return None


def _read_folder(base: Path, image_size: int) -> dict[str, np.ndarray]:
    """Decode torchvision's layout; the track id comes from ``TTTTT_FFFFF.ppm`` file names."""
    train_dir = base / "GTSRB" / "Training"
    paths, labels, tracks = [], [], []
    for label, cls in enumerate(sorted(p for p in train_dir.iterdir() if p.is_dir())):
        for f in sorted(cls.glob("*.ppm")):
            track = f.stem.split("_")[0]
            if not track.isdigit():
                raise ValueError(f"gtsrb: {f.name} is not named TTTTT_FFFFF.ppm (track_frame)")
            paths.append(f)
            labels.append(label)
            tracks.append(int(track))
    csv_path = base / "GT-final_test.csv"
    if not csv_path.is_file():
        raise not_found("gtsrb", "GT-final_test.csv (official test labels)", base, HOW_TO_GET)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";", skipinitialspace=True))
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    return {
        "x_train": read_images(paths, image_size),
        "y_train": np.asarray(labels, dtype=np.int64),
        "track_train": np.asarray(tracks, dtype=np.int64),
        "x_test": read_images([test_dir / r["Filename"] for r in rows], image_size),
        "y_test": np.asarray([int(r["ClassId"]) for r in rows], dtype=np.int64),
    }


@DATASETS.register("gtsrb")
def gtsrb(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    image_size: int = 32,
    download: bool = False,
) -> DatasetSplits:
    """GTSRB: official train (39,209) and test (12,630) images, validation split by track.

    Args:
        root: folder with the .npz trio or torchvision's layout; default ``$EXITWISE_GTSRB_DIR``,
            else ``../shared/data/gtsrb`` relative to the working directory.
        seed: seed of the validation split.
        val_fraction: share of training *tracks'* images kept for validation.
        image_size: output side; the .npz files are 32x32 (other sizes are resampled from them).
        download: fetch torchvision's layout into ``root`` first (needs internet).
    """
    root = default_root(root, "EXITWISE_GTSRB_DIR", Path("..") / "shared" / "data" / "gtsrb")
    if download:
        from torchvision.datasets import GTSRB

        for split in ("train", "test"):
            GTSRB(str(root), split=split, download=True)
    if all((root / f).is_file() for f in NPZ_FILES):
        arrays = read_npz_arrays([root / f for f in NPZ_FILES])
        if image_size != 32:
            warnings.warn(
                f"gtsrb: the .npz images are 32x32; resampling them to {image_size}x{image_size}",
                stacklevel=2,
            )
            for key in ("x_train", "x_test"):
                arrays[key] = resize_nchw(arrays[key].transpose(0, 3, 1, 2), image_size)
        return splits_from_arrays(
            "gtsrb", arrays, seed=seed, val_fraction=val_fraction, class_names=CLASS_NAMES
        )
    base = _folder(root)
    if base is None:
        raise not_found("gtsrb", f"{list(NPZ_FILES)} or gtsrb/GTSRB/Training/", root, HOW_TO_GET)
    arrays = _read_folder(base, image_size)
    groups = np.stack([arrays["y_train"], arrays["track_train"]], 1)
    return make_splits(
        "gtsrb", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        CLASS_NAMES, seed=seed, val_fraction=val_fraction, groups=groups,
    )  # fmt: skip
