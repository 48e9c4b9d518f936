"""``mnist``: handwritten digits from the original IDX files (LeCun, Cortes and Burges)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .base import DATASETS, DatasetSplits, make_splits
from .files import default_root, not_found, resize_nchw

FILES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
MAGIC = {3: 2051, 1: 2049}  # 0x0803: unsigned bytes in 3 dimensions; 0x0801: in 1


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (gzip-compressed or raw), checking its header.

    The header is big-endian: a magic number (``0x08`` type code, then the number of dimensions),
    then one 32-bit size per dimension.

    Args:
        path: the file (``.gz`` or not; detected from its first bytes).
        ndim: expected number of dimensions (3 for images, 1 for labels).
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != MAGIC[ndim]:
        raise ValueError(
            f"mnist: {path} has magic number {magic}, expected {MAGIC[ndim]} (an IDX file of "
            f"unsigned bytes with {ndim} dimension(s)); the file is corrupt or not what its name "
            "says. Download the original files again."
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    header = 4 + 4 * ndim
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(
            f"mnist: {path} declares shape {tuple(dims)} ({int(np.prod(dims))} bytes of data) "
            f"but holds {len(raw) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_file(root: Path, names: tuple[str, ...]) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "mnist" / "MNIST" / "raw"):
        for name in names:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


@DATASETS.register("mnist")
def mnist(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    image_size: int = 28,
    channels: int = 1,
    download: bool = False,
) -> DatasetSplits:
    """MNIST: 60,000 train and 10,000 test grey digits, 28x28.

    Args:
        root: folder with the four IDX files (``.gz`` or not), looked up in ``root`` and
            ``root/MNIST/raw``; default ``$EXITWISE_MNIST_DIR``, else ``../shared/data/mnist``.
        seed: seed of the stratified validation split.
        val_fraction: share of train kept for validation.
        image_size: output side; 28 + an even number pads with black (32 is LeNet's input),
            other sizes resize bilinearly.
        channels: 1, or 3 to repeat the grey channel for RGB backbones.
        download: fetch the files into ``root/MNIST/raw`` with torchvision first (needs internet).
    """
    root = default_root(root, "EXITWISE_MNIST_DIR", Path("..") / "shared" / "data" / "mnist")
    if channels not in (1, 3):
        raise ValueError(f"mnist: channels must be 1 or 3, got {channels}")
    if download:
        from torchvision.datasets import MNIST

        MNIST(str(root), download=True)
    arrays = {}
    for key, names in FILES.items():
        path = find_file(root, names)
        if path is None:
            raise not_found(
                "mnist", f"{names[0]}(.gz) in it or in MNIST/raw/", root,
                "Pass root= to the folder holding the four IDX files, or fetch them on a machine "
                "with internet with load_dataset('mnist', root, download=True).",
            )  # fmt: skip
        arrays[key] = read_idx(path, 3 if key.startswith("x") else 1)
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise ValueError(
                f"mnist: {len(arrays[f'x_{split}'])} {split} images but "
                f"{len(arrays[f'y_{split}'])} labels"
            )
    xs = []
    for key in ("x_train", "x_test"):
        x = arrays[key][:, None]  # (N, 1, 28, 28)
        pad = image_size - x.shape[-1]
        if pad > 0 and pad % 2 == 0 and x.shape[-1] == x.shape[-2]:
            x = np.pad(x, ((0, 0), (0, 0), (pad // 2, pad // 2), (pad // 2, pad // 2)))
        else:
            x = resize_nchw(x, image_size)
        xs.append(np.ascontiguousarray(np.repeat(x, channels, axis=1)))
    return make_splits(
        "mnist", xs[0], arrays["y_train"], xs[1], arrays["y_test"], [str(i) for i in range(10)],
        seed=seed, val_fraction=val_fraction,
    )  # fmt: skip
