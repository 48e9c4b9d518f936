"""ArrayDataset / DatasetSplits contracts, split_by_group, load_dataset errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exitwise.data import DATASETS, ArrayDataset, DatasetSplits, load_dataset, split_by_group


def _ds(n: int = 6, c: int = 3, size: int = 4) -> ArrayDataset:
    images = torch.arange(n * c * size * size, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ArrayDataset(images.reshape(n, c, size, size), torch.arange(n) % 2)


def test_array_dataset_items_are_float_in_unit_range():
    ds = _ds()
    x, y = ds[3]
    assert len(ds) == 6 and x.dtype == torch.float32 and x.shape == (3, 4, 4)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and isinstance(y, int)
    assert torch.equal((x * 255).round().to(torch.uint8), ds.images[3])


def test_array_dataset_repr_and_identity_equality():
    a, b = _ds(), _ds()
    assert repr(a) == "ArrayDataset(n=6, image_shape=(3, 4, 4))"
    assert a == a and a != b  # identity: comparing tensors field by field would raise


def test_array_dataset_converts_numpy_and_rejects_bad_input():
    ds = ArrayDataset(np.zeros((2, 1, 3, 3), np.uint8), np.array([0, 1], np.int32))
    assert ds.labels.dtype == torch.int64 and ds.images.is_contiguous()
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(torch.zeros(2, 1, 3, 3), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"\(N, C, H, W\)"):
        ArrayDataset(torch.zeros(2, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ArrayDataset(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="integers"):
        ArrayDataset(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(2))


def test_dataset_splits_input_shape_and_label_check():
    ds = _ds()
    splits = DatasetSplits("t", ds, ds, ds, 2, ["a", "b"], (0.5,) * 3, (0.2,) * 3)
    assert splits.input_shape == (3, 4, 4)
    with pytest.raises(ValueError, match="expected 0..0"):
        DatasetSplits("t", ds, ds, ds, 1, ["a"], (0.5,) * 3, (0.2,) * 3)


def test_stratified_split_is_deterministic_and_per_class():
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    train, val = split_by_group(labels, None, 0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert len(val) == 30
    assert np.array_equal(np.bincount(labels[val]), [2, 4, 6, 8, 10])
    again = split_by_group(labels, None, 0.2, seed=3)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(split_by_group(labels, None, 0.2, seed=4)[1], val)


def test_group_split_never_splits_a_group():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    groups = np.stack([labels, rng.integers(0, 6, size=len(labels))], 1)  # (label, track) rows
    train, val = split_by_group(labels, groups, 0.25, seed=0)
    key = lambda idx: {tuple(g) for g in groups[idx]}  # noqa: E731
    assert key(train).isdisjoint(key(val))
    assert set(labels[val]) == set(range(4)) and set(labels[train]) == set(range(4))
    assert 0.1 < len(val) / len(labels) < 0.4


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, "0.1"])
def test_bad_val_fraction_is_rejected(bad):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_by_group(np.zeros(10), None, bad, seed=0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        load_dataset("synthetic-signs", val_fraction=bad)


def test_unknown_dataset_and_option_say_what_exists():
    with pytest.raises(KeyError, match="synthetic-signs"):
        load_dataset("synthetic-sign")
    with pytest.raises(TypeError, match="image_sise.*accepts"):
        load_dataset("synthetic-signs", image_sise=32)
    assert {"synthetic-signs", "npz", "gtsrb", "mnist", "cifar10", "svhn", "caltech256"} <= set(
        DATASETS.names()
    )
