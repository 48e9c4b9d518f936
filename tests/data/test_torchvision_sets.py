"""``cifar10``, ``svhn``, ``caltech256`` from tiny files in each dataset's own on-disk format.

The formats follow torchvision 0.29's readers (``datasets/cifar.py``, ``svhn.py``, ``caltech.py``).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from exitwise.data import load_dataset


def _cifar(root, per_batch: int = 20, protocol: int = 2) -> dict[str, tuple]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        entry = {"batch_label": name, "labels": labels, "data": data,
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
        batches[name] = (data, labels)
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches(tmp_path, protocol):
    batches = _cifar(tmp_path, protocol=protocol)
    data = load_dataset("cifar10", tmp_path)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    assert len(data.train) + len(data.val) == 100 and len(data.test) == 20
    x, y = batches["test_batch"]
    assert np.array_equal(data.test.images.numpy(), x.reshape(-1, 3, 32, 32))  # CHW planes
    assert data.test.labels.tolist() == y


class _Evil:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_cifar10_refuses_code_in_batches_and_explains_missing_files(tmp_path):
    _cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        pickle.dumps({"data": _Evil(), "labels": []})
    )
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="data_batch_1.*download=True"):
        load_dataset("cifar10", tmp_path / "nothing")


def test_svhn_mat_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="svhn's .mat files need scipy")
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", 30), ("test", 12)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # MATLAB layout (H, W, C, N)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)  # digit 0 stored as 10
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = (x, y)
    data = load_dataset("svhn", tmp_path)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    x, y = written["test"]
    assert np.array_equal(data.test.images.numpy(), x.transpose(3, 2, 0, 1))
    assert data.test.labels.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert len(data.train) + len(data.val) == 30
    with pytest.raises(FileNotFoundError, match="extra_32x32.mat"):
        load_dataset("svhn", tmp_path, include_extra=True)


def _caltech(root, per_class: int = 10) -> list[str]:
    folder = root / "caltech256" / "256_ObjectCategories"
    names = ["001.ak47", "002.american-flag", "003.backpack", "257.clutter"]
    rng = np.random.default_rng(0)
    for c, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(40, 90, size=2)
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            stem = f"{name[:3]}_{i + 1:04d}"
            if i == 0:
                img.convert("L").save(folder / name / f"{stem}.jpg")  # greyscale, as some are
            elif i == 1 and c == 0:
                img.save(folder / name / f"{stem}.png")
            else:
                img.save(folder / name / f"{stem}.jpg", quality=90)
    (folder / "003.backpack" / "notes.txt").write_text("not an image")
    return names


def test_caltech256_folder_and_80_10_10_split(tmp_path):
    _caltech(tmp_path)
    data = load_dataset("caltech256", tmp_path, image_size=24, seed=4)
    assert data.input_shape == (3, 24, 24) and data.num_classes == 4
    assert data.class_names == ["ak47", "american-flag", "backpack", "clutter"]
    for split, n in ((data.train, 8), (data.val, 1), (data.test, 1)):
        assert torch.equal(torch.bincount(split.labels, minlength=4), torch.full((4,), n))
    every = torch.cat([data.train.images, data.val.images, data.test.images])
    assert len({bytes(x.numpy()) for x in every}) == 40  # no image in two splits
    again = load_dataset("caltech256", tmp_path, image_size=24, seed=4)
    assert torch.equal(again.test.images, data.test.images)


def test_caltech256_cache_and_errors(tmp_path):
    _caltech(tmp_path / "data", per_class=3)
    first = load_dataset("caltech256", tmp_path / "data", image_size=16, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1
    second = load_dataset("caltech256", tmp_path / "data", image_size=16, cache_dir=tmp_path / "c")
    assert torch.equal(first.train.images, second.train.images)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        load_dataset("caltech256", tmp_path / "data", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(FileNotFoundError, match="256_ObjectCategories.*download=True"):
        load_dataset("caltech256", tmp_path / "missing")
