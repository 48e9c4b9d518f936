"""The built-in synthetic traffic signs: determinism, layout, cache, class separability."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import exitwise.data
from exitwise.data import load_dataset
from exitwise.data.sign_templates import CLASS_NAMES, render_templates
from exitwise.data.synthetic_signs import generate_split, render_signs

SMALL = dict(train_per_class=3, test_per_class=2)


@pytest.fixture(scope="module")
def small():
    return load_dataset("synthetic-signs", seed=5, **SMALL)


def test_shapes_dtypes_counts(small):
    assert small.name == "synthetic-signs" and small.num_classes == 43
    assert small.class_names == list(CLASS_NAMES) and small.input_shape == (3, 32, 32)
    for split in (small.train, small.val, small.test):
        assert split.images.dtype == torch.uint8 and split.images.is_contiguous()
        assert split.labels.dtype == torch.int64
    train_labels = torch.cat([small.train.labels, small.val.labels])
    assert torch.equal(torch.bincount(train_labels, minlength=43), torch.full((43,), 3))
    assert torch.equal(torch.bincount(small.test.labels, minlength=43), torch.full((43,), 2))
    assert len(small.train) + len(small.val) == 129 and len(small.val) == 13
    assert len(small.mean) == 3 and all(0.05 < m < 0.95 for m in small.mean)
    expected = small.train.images.float().div(255).mean((0, 2, 3))
    assert np.allclose(small.mean, expected.numpy(), atol=1e-5)


def test_same_seed_same_bytes_other_seed_other_images(small):
    again = load_dataset("synthetic-signs", seed=5, **SMALL)
    for a, b in ((small.train, again.train), (small.val, again.val), (small.test, again.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    other = load_dataset("synthetic-signs", seed=6, **SMALL)
    assert not torch.equal(small.test.images, other.test.images)
    # The test split never repeats a training image.
    assert not torch.equal(small.test.images[:43], small.train.images[:43])


def test_generation_does_not_depend_on_chunking():
    whole, labels = generate_split(2, seed=1, split=0, chunk_size=86)
    chunked, _ = generate_split(2, seed=1, split=0, chunk_size=7)
    assert np.array_equal(whole, chunked)
    tail, _ = render_signs(labels[50:60], seed=1, split=0, first_index=50)
    assert np.array_equal(tail, whole[50:60])


def test_generation_is_identical_in_another_process():
    x, _ = generate_split(1, seed=3, split=1)
    src = str(Path(exitwise.data.__file__).parents[2])
    code = (
        "import hashlib; from exitwise.data.synthetic_signs import generate_split; "
        "print(hashlib.sha256(generate_split(1, seed=3, split=1)[0].tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hashlib.sha256(x.tobytes()).hexdigest()


def test_cache_round_trip(tmp_path, small):
    first = load_dataset("synthetic-signs", seed=5, cache_dir=tmp_path, **SMALL)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temp file left behind
    with np.load(files[0], allow_pickle=False) as f:
        assert sorted(f.files) == ["x_test", "x_train", "y_test", "y_train"]
    mtime = files[0].stat().st_mtime_ns
    second = load_dataset("synthetic-signs", seed=5, cache_dir=tmp_path, **SMALL)
    assert files[0].stat().st_mtime_ns == mtime  # read, not rewritten
    for a, b in ((first.train, second.train), (first.test, second.test), (small.val, second.val)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_unreadable_cache_is_regenerated(tmp_path, small):
    load_dataset("synthetic-signs", seed=5, cache_dir=tmp_path, **SMALL)
    (cache,) = tmp_path.iterdir()
    cache.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = load_dataset("synthetic-signs", seed=5, cache_dir=tmp_path, **SMALL)
    assert torch.equal(again.test.images, small.test.images)
    with np.load(cache, allow_pickle=False) as f:  # rewritten
        assert f["x_test"].shape == (86, 3, 32, 32)


def test_image_size_option():
    data = load_dataset("synthetic-signs", image_size=48, train_per_class=1, test_per_class=1)
    assert data.input_shape == (3, 48, 48)


def test_clean_templates_are_pairwise_distinct_at_32px():
    t = torch.from_numpy(render_templates(64).copy())
    rgb = t[:, :3] + (1 - t[:, 3:]) * 0.5  # on grey
    small = F.avg_pool2d(rgb, 2).flatten(1)  # (43, 3 * 32 * 32)
    dist = torch.cdist(small, small) / small.shape[1] ** 0.5  # RMS difference per pixel
    dist.fill_diagonal_(1.0)
    assert float(dist.min()) > 0.03, "two classes render (almost) the same sign"


def test_difficulty_has_an_easy_bulk_and_a_hard_tail():
    _, d = render_signs(np.arange(430) % 43, seed=0, split=0)
    assert np.median(d) < 0.3 and np.quantile(d, 0.95) > 0.55 and d.max() <= 1.0


def test_classes_are_learnable_from_few_examples():
    """A linear classifier on 8x8 pixels beats chance (1/43) many times over."""
    x_train, y_train = generate_split(10, seed=0, split=0)
    x_test, y_test = generate_split(5, seed=0, split=1)
    feats = lambda x: F.avg_pool2d(torch.from_numpy(x).float() / 255, 4).flatten(1)  # noqa: E731
    a, b = feats(x_train), feats(x_test)
    mu, sd = a.mean(0), a.std(0) + 1e-3
    a, b = (a - mu) / sd, (b - mu) / sd
    w = torch.zeros(a.shape[1], 43, requires_grad=True)
    bias = torch.zeros(43, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=100)
    labels = torch.from_numpy(y_train)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, labels) + 1e-2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    accuracy = ((b @ w + bias).argmax(1).numpy() == y_test).mean()
    assert accuracy > 0.2, f"accuracy {accuracy:.3f}, chance is {1 / 43:.3f}"


def test_bad_options_are_explained():
    with pytest.raises(ValueError, match="image_size >= 16"):
        load_dataset("synthetic-signs", image_size=8)
    with pytest.raises(ValueError, match="non-negative integer seed"):
        load_dataset("synthetic-signs", seed=-1)
