"""File helpers shared by the loaders: default roots, image decoding, atomic .npz caches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from exitwise.atomic import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")


def default_root(root: str | Path | None, env: str, fallback: str | Path) -> Path:
    """``root`` if given, else ``$env`` if set, else ``fallback`` (relative to the CWD)."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return Path(fallback)


def not_found(dataset: str, expected: str, root: Path, fix: str) -> FileNotFoundError:
    """An error that says what was looked for, where, and how to get it."""
    return FileNotFoundError(
        f"{dataset}: expected {expected} under {root.resolve()}, but it is not there. {fix}"
    )


def _open_rgb(path: Path, size: int, crop: bool) -> Image.Image:
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: let the decoder downscale by 2/4/8 first (fast)
        im = im.convert("RGB")
    if crop:  # centre square, so objects keep their aspect ratio
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)


def read_images(paths: Sequence[Path], size: int, crop: bool = False) -> np.ndarray:
    """Decode image files to uint8 RGB ``(N, 3, size, size)`` (resized, maybe centre-cropped)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = np.asarray(_open_rgb(Path(path), size, crop)).transpose(2, 0, 1)
    return out


def resize_nchw(x: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``(N, C, H, W)`` images to ``size x size`` with bilinear filtering."""
    if x.shape[2:] == (size, size):
        return x
    out = np.empty((len(x), x.shape[1], size, size), dtype=np.uint8)
    for i, img in enumerate(x):
        for c in range(x.shape[1]):
            im = Image.fromarray(img[c]).resize((size, size), Image.Resampling.BILINEAR)
            out[i, c] = np.asarray(im)
    return out


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to ``path`` atomically (:func:`~exitwise.atomic.atomic_write`: never
    half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append .npz to a bare name
            np.savez(f, **cast(dict[str, Any], arrays))

    atomic_write(path, write)


def load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Load ``keys`` from an .npz with ``allow_pickle=False``; a missing key is a clear error."""
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in keys if k not in f.files]
        if missing:
            raise KeyError(f"{path} lacks the keys {missing}; it holds {sorted(f.files)}")
        return {k: f[k] for k in keys}
