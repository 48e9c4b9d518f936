"""``mnist`` from IDX files written here in the original format (big-endian header, raw or gzip)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from exitwise.data import load_dataset


def _idx(path: Path, array: np.ndarray, compress: bool, magic: int | None = None) -> None:
    magic = magic if magic is not None else 0x0800 + array.ndim
    raw = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _mnist(folder: Path, compress: bool, n_train: int = 50, n_test: int = 20) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        _idx(folder / name, array, compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reads_idx_files(tmp_path, compress):
    arrays = _mnist(tmp_path / "MNIST" / "raw", compress)  # torchvision's layout
    data = load_dataset("mnist", tmp_path)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) == 45 and len(data.val) == 5 and len(data.test) == 20
    assert np.array_equal(data.test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(data.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_mnist_pads_to_32_and_repeats_channels(tmp_path):
    arrays = _mnist(tmp_path, compress=False)  # files directly in root
    data = load_dataset("mnist", tmp_path, image_size=32, channels=3)
    assert data.input_shape == (3, 32, 32)
    x = data.test.images.numpy()
    assert np.array_equal(x[:, 1, 2:30, 2:30], arrays["t10k-images-idx3-ubyte"])
    assert x[:, :, :2].max() == 0 and x[:, :, :, 30:].max() == 0
    assert load_dataset("mnist", tmp_path, image_size=20).input_shape == (1, 20, 20)


def test_mnist_bad_magic_and_missing_files(tmp_path):
    _mnist(tmp_path, compress=True)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(20, np.uint8), True, magic=2051)
    with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
        load_dataset("mnist", tmp_path)
    truncated = struct.pack(">4I", 2051, 20, 28, 28) + b"\0" * 100
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(truncated))
    with pytest.raises(ValueError, match=r"declares shape \(20, 28, 28\).*truncated"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path / "elsewhere")
