"""Cache files: written atomically, and a failed write says so."""

from __future__ import annotations

import numpy as np
import pytest

from exitwise.data.files import load_npz, save_npz_atomic


def test_save_npz_atomic_round_trips(tmp_path):
    path = tmp_path / "sub" / "cache.npz"
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    save_npz_atomic(path, x=x)
    assert np.array_equal(load_npz(path, ["x"])["x"], x)
    assert [p.name for p in path.parent.iterdir()] == ["cache.npz"]  # no temporary file left


def test_a_failed_write_raises_and_leaves_nothing(tmp_path):
    path = tmp_path / "cache.npz"

    class Unsaveable:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("cannot convert")

    with pytest.raises(RuntimeError, match="cannot convert"):
        save_npz_atomic(path, x=Unsaveable())
    assert list(tmp_path.iterdir()) == []
