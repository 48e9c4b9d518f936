"""``caltech101``: the shared folder's layout (``101_ObjectCategories/<class>/*.jpg`` and the
fixed ``train.txt`` / ``test.txt`` lists), made tiny with real JPEG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from exitwise.data import load_dataset

CLASSES = ("accordion", "airplanes", "wild_cat")


def _folder(root, train_per_class=10, test_per_class=3):
    """Write JPEGs of a different shade per class, and the two split lists."""
    rng = np.random.default_rng(0)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for c, name in enumerate(CLASSES):
        (root / "101_ObjectCategories" / name).mkdir(parents=True)
        for i in range(train_per_class + test_per_class):
            pixels = np.full((40, 56, 3), 40 + 80 * c, dtype=np.uint8)
            pixels += rng.integers(0, 20, pixels.shape, dtype=np.uint8)
            rel = f"{name}/image_{i + 1:04d}.jpg"
            Image.fromarray(pixels).save(root / "101_ObjectCategories" / rel, quality=95)
            lists["train" if i < train_per_class else "test"].append(rel)
    for split, entries in lists.items():
        (root / f"{split}.txt").write_text("\n".join(entries) + "\n")
    return lists


def test_fixed_split_and_stratified_validation(tmp_path):
    _folder(tmp_path)
    data = load_dataset("caltech101", tmp_path, image_size=24, val_fraction=0.2, seed=1)
    assert data.input_shape == (3, 24, 24) and data.num_classes == 3
    assert data.class_names == ["accordion", "airplanes", "wild cat"]
    assert len(data.test) == 9 and len(data.train) + len(data.val) == 30
    # validation comes from train only, 2 of every class's 10
    assert torch.equal(torch.bincount(data.val.labels, minlength=3), torch.full((3,), 2))
    assert torch.equal(torch.bincount(data.test.labels, minlength=3), torch.full((3,), 3))
    # labels follow the folders: class 2 is the brightest
    means = [float(data.test.images[data.test.labels == c].float().mean()) for c in range(3)]
    assert means == sorted(means)
    again = load_dataset("caltech101", tmp_path, image_size=24, val_fraction=0.2, seed=1)
    assert torch.equal(again.val.images, data.val.images)


def test_cache_and_errors(tmp_path):
    lists = _folder(tmp_path / "d", train_per_class=4, test_per_class=2)
    first = load_dataset("caltech101", tmp_path / "d", image_size=16, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("caltech101_*.npz"))) == 1
    second = load_dataset("caltech101", tmp_path / "d", image_size=16, cache_dir=tmp_path / "c")
    assert torch.equal(first.test.images, second.test.images)
    with pytest.raises(FileNotFoundError, match="101_ObjectCategories.*EXITWISE_CALTECH101_DIR"):
        load_dataset("caltech101", tmp_path / "missing")
    (tmp_path / "d" / "test.txt").write_text("\n".join(lists["test"] + ["accordion/gone.jpg"]))
    with pytest.raises(FileNotFoundError, match="1 images listed in test.txt, e.g. accordion/gone"):
        load_dataset("caltech101", tmp_path / "d", image_size=16)
    (tmp_path / "d" / "test.txt").write_text("just_a_name.jpg\n")
    with pytest.raises(ValueError, match="line 1 reads 'just_a_name.jpg'; expected 'class/"):
        load_dataset("caltech101", tmp_path / "d", image_size=16)
