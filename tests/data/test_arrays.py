"""The ``npz`` loader and ``gtsrb`` (its .npz trio and torchvision's folder layout)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from exitwise.data import load_dataset


def _tagged(n: int, hwc: bool, size: int = 8) -> np.ndarray:
    """uint8 images whose first two pixels encode their row index (to trace them after a split)."""
    x = np.random.default_rng(n).integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if hwc else x


def _rows(images: torch.Tensor) -> np.ndarray:
    return images[:, 0, 0, 0].numpy().astype(int) + 256 * images[:, 0, 0, 1].numpy().astype(int)


@pytest.mark.parametrize("hwc", [True, False])
def test_npz_hwc_and_chw(tmp_path, caplog, hwc):
    x_train, x_test = _tagged(60, hwc), _tagged(20, hwc)
    y_train, y_test = np.arange(60) % 3, np.arange(20) % 3
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=y_train.astype(np.uint8), x_test=x_test, y_test=y_test)
    with caplog.at_level(logging.INFO, logger="exitwise.data"):
        data = load_dataset("npz", path, seed=1)
    assert ("hwc" if hwc else "chw") in caplog.text
    assert data.input_shape == (3, 8, 8) and data.num_classes == 3
    assert data.class_names == ["0", "1", "2"]
    assert len(data.train) == 54 and len(data.val) == 6 and len(data.test) == 20
    chw = x_train.transpose(0, 3, 1, 2) if hwc else x_train
    for split in (data.train, data.val):
        rows = _rows(split.images)
        assert np.array_equal(split.images.numpy(), chw[rows])
        assert np.array_equal(split.labels.numpy(), y_train[rows])
    assert sorted(np.concatenate([_rows(data.train.images), _rows(data.val.images)])) == list(
        range(60)
    )


def test_npz_group_split_keeps_groups_whole(tmp_path):
    n = 200
    groups = np.random.default_rng(0).integers(0, 40, size=n)
    labels = groups % 4  # every group has one label
    path = tmp_path / "g.npz"
    np.savez(path, x_train=_tagged(n, True), y_train=labels, group_train=groups,
             x_test=_tagged(8, True), y_test=np.arange(8) % 4)  # fmt: skip
    data = load_dataset("npz", path, val_fraction=0.2)
    train_groups = set(groups[_rows(data.train.images)])
    val_groups = set(groups[_rows(data.val.images)])
    assert val_groups and train_groups.isdisjoint(val_groups)


def test_npz_errors_say_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="root="):
        load_dataset("npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("npz", tmp_path / "nope.npz")
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=_tagged(4, True), y_train=np.zeros(4, np.int64))
    with pytest.raises(KeyError, match=r"lack the keys \['x_test', 'y_test'\]"):
        load_dataset("npz", path)
    np.savez(path, x_train=_tagged(4, True), y_train=np.zeros(3, np.int64),
             x_test=_tagged(2, True), y_test=np.zeros(2, np.int64))  # fmt: skip
    with pytest.raises(ValueError, match="y_train must be integer labels of shape"):
        load_dataset("npz", path)
    np.savez(path, x_train=np.zeros((4, 3, 3, 3), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 3, 3, 3), np.uint8), y_test=np.zeros(2, np.int64))  # fmt: skip
    with pytest.raises(ValueError, match="layout='hwc'"):
        load_dataset("npz", path)
    assert load_dataset("npz", path, layout="chw").input_shape == (3, 3, 3)
    np.savez(path, x_train=np.zeros((4, 8, 8, 3)), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 8, 8, 3)), y_test=np.zeros(2, np.int64))  # fmt: skip
    with pytest.raises(TypeError, match="uint8"):
        load_dataset("npz", path)


def _gtsrb_trio(folder, tracks_per_class: int = 5, frames: int = 6):
    """Tiny files shaped like the real gtsrb32_*.npz (HWC uint8, uint8 labels, int16 tracks)."""
    labels = np.repeat(np.arange(43), tracks_per_class * frames)
    tracks = np.tile(np.repeat(np.arange(tracks_per_class), frames), 43).astype(np.int16)
    frame = np.tile(np.arange(frames), 43 * tracks_per_class).astype(np.int16)
    x = _tagged(len(labels), True, size=32)
    half = len(labels) // 2
    for k, sl in ((1, slice(0, half)), (2, slice(half, None))):
        np.savez(folder / f"gtsrb32_train_part{k}.npz", x_train=x[sl],
                 y_train=labels[sl].astype(np.uint8), track_train=tracks[sl],
                 frame_train=frame[sl], meta_train=np.zeros((len(x[sl]), 6), np.int16))  # fmt: skip
    np.savez(folder / "gtsrb32_test.npz", x_test=_tagged(86, True, size=32),
             y_test=(np.arange(86) % 43).astype(np.uint8))  # fmt: skip
    return labels, tracks


def test_gtsrb_npz_trio_splits_by_track(tmp_path):
    labels, tracks = _gtsrb_trio(tmp_path)
    data = load_dataset("gtsrb", tmp_path, seed=2)
    assert data.num_classes == 43 and data.class_names[14] == "Stop"
    assert data.input_shape == (3, 32, 32) and len(data.test) == 86
    train_rows, val_rows = _rows(data.train.images), _rows(data.val.images)
    assert sorted(np.concatenate([train_rows, val_rows])) == list(range(len(labels)))
    assert np.array_equal(data.train.labels.numpy(), labels[train_rows])  # part1 then part2
    pairs = lambda rows: set(zip(labels[rows], tracks[rows], strict=True))  # noqa: E731
    assert pairs(train_rows).isdisjoint(pairs(val_rows))
    assert len(data.val) % 6 == 0 and 0.05 < len(data.val) / len(labels) < 0.3


def test_gtsrb_env_var_default_and_missing_files(tmp_path, monkeypatch):
    _gtsrb_trio(tmp_path, tracks_per_class=2, frames=2)
    monkeypatch.setenv("EXITWISE_GTSRB_DIR", str(tmp_path))
    assert len(load_dataset("gtsrb").test) == 86
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="gtsrb32_train_part1.npz.*EXITWISE_GTSRB_DIR"):
        load_dataset("gtsrb", empty)


def test_gtsrb_torchvision_folder_layout(tmp_path):
    base = tmp_path / "gtsrb"
    rng = np.random.default_rng(0)
    for cls in range(3):
        folder = base / "GTSRB" / "Training" / f"{cls:05d}"
        folder.mkdir(parents=True)
        for track in range(3):
            for frame in range(4):
                img = rng.integers(0, 256, size=(36, 40, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{track:05d}_{frame:05d}.ppm")
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, size=(30, 30, 3), dtype=np.uint8)).save(
            test_dir / f"{i:05d}.ppm"
        )
        rows.append(f"{i:05d}.ppm;30;30;5;5;25;25;{i % 3}")
    (base / "GT-final_test.csv").write_text("\r\n".join(rows) + "\r\n")
    data = load_dataset("gtsrb", tmp_path, val_fraction=0.34, image_size=16)
    assert data.input_shape == (3, 16, 16)
    assert len(data.train) + len(data.val) == 36 and len(data.test) == 5
    assert data.test.labels.tolist() == [0, 1, 2, 0, 1]
    assert len(data.val) % 4 == 0  # whole tracks of 4 frames
