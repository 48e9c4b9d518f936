"""The real offline copies in ``shared/data`` (next to the repository), when they are present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exitwise.data import load_dataset
from exitwise.data.gtsrb import NPZ_FILES

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
GTSRB, MNIST = SHARED / "gtsrb", SHARED / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not all((GTSRB / f).is_file() for f in NPZ_FILES), reason="no real GTSRB")
def test_real_gtsrb_counts_and_track_split():
    data = load_dataset("gtsrb", GTSRB, seed=0)
    assert len(data.train) + len(data.val) == 39209 and len(data.test) == 12630
    assert data.input_shape == (3, 32, 32) and data.num_classes == 43
    assert 0.09 < len(data.val) / 39209 < 0.11
    # Trace every kept image back to its (label, track) through the raw arrays.
    parts = [np.load(GTSRB / f, allow_pickle=False) for f in NPZ_FILES[:2]]
    x = np.concatenate([p["x_train"] for p in parts]).transpose(0, 3, 1, 2)
    y = np.concatenate([p["y_train"] for p in parts]).astype(np.int64)
    track = np.concatenate([p["track_train"] for p in parts]).astype(np.int64)
    index = {x[i].tobytes(): i for i in range(len(x))}  # all training images are distinct
    rows = lambda split: np.array([index[im.numpy().tobytes()] for im in split.images])  # noqa: E731
    train_rows, val_rows = rows(data.train), rows(data.val)
    assert np.array_equal(np.sort(np.concatenate([train_rows, val_rows])), np.arange(len(x)))
    assert torch.equal(data.val.labels, torch.from_numpy(y[val_rows]))
    pairs = lambda r: set(zip(y[r].tolist(), track[r].tolist(), strict=True))  # noqa: E731
    assert pairs(train_rows).isdisjoint(pairs(val_rows))
    assert set(y[val_rows].tolist()) == set(range(43))


@pytest.mark.skipif(not (MNIST / "MNIST" / "raw").is_dir(), reason="no real MNIST")
def test_real_mnist_counts():
    data = load_dataset("mnist", MNIST)
    assert len(data.train) + len(data.val) == 60000 and len(data.test) == 10000
    assert torch.bincount(data.test.labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]  # fmt: skip
    assert 0.12 < data.mean[0] < 0.14  # the well-known 0.1307
