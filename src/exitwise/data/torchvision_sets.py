"""``cifar10``, ``svhn``, ``caltech256``: torchvision's on-disk layouts, read into uint8 arrays.

The files are read directly (the layouts are torchvision's, so ``download=True`` fetches them with
torchvision). CIFAR-10's pickled batches are read with an unpickler that only accepts the numpy
array constructors, so a tampered batch file cannot run code.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from .base import DATASETS, DatasetSplits, check_val_fraction, make_splits, split_by_group
from .files import IMAGE_EXTENSIONS, default_root, load_npz, not_found, read_images, save_npz_atomic

DATA_ENV, DATA_DEFAULT = "EXITWISE_DATA_DIR", "data"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")  # fmt: skip


def _fix(name: str) -> str:
    return (
        f"Pass root= to the folder that holds it, or fetch it on a machine with internet with "
        f"load_dataset('{name}', root, download=True) and copy the folder over."
    )


def _numpy_core():
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    return multiarray, numeric


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays, and refuses every other global."""

    def find_class(self, module: str, name: str):
        multiarray, numeric = _numpy_core()
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("_codecs", "encode"): codecs.encode}  # fmt: skip
        for core in ("numpy.core", "numpy._core"):  # written by numpy 1.x or 2.x
            allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
            allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"cifar10: refusing to load {module}.{name} from a batch file; CIFAR batches only "
                "hold dicts of numpy arrays and lists"
            )
        return allowed[(module, name)]


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        entry = _ArrayUnpickler(f, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise ValueError(f"cifar10: {path} holds a {type(entry).__name__}, expected a batch dict")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(f"cifar10: {path} lacks 'data' or 'labels' (keys: {sorted(entry)})")
    data = np.asarray(entry["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"cifar10: {path} holds data of shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), np.asarray(entry["labels"], dtype=np.int64)


@DATASETS.register("cifar10")
def cifar10(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    download: bool = False,
) -> DatasetSplits:
    """CIFAR-10 (Krizhevsky, 2009): 50,000 train and 10,000 test RGB 32x32 images, 10 classes.

    Args:
        root: folder holding ``cifar-10-batches-py/`` (torchvision's layout); default
            ``$EXITWISE_DATA_DIR``, else ``./data``.
        seed: seed of the stratified validation split.
        val_fraction: share of train kept for validation.
        download: fetch the files with torchvision first (needs internet).
    """
    root = default_root(root, DATA_ENV, DATA_DEFAULT)
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), download=True)
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise not_found("cifar10", f"cifar-10-batches-py/{{{', '.join(missing)}}}", root,
                        _fix("cifar10"))  # fmt: skip
    train = [_cifar_batch(folder / n) for n in names[:5]]
    x_test, y_test = _cifar_batch(folder / "test_batch")
    return make_splits(
        "cifar10", np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
        x_test, y_test, CIFAR10_CLASSES, seed=seed, val_fraction=val_fraction,
    )  # fmt: skip


def _svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        import scipy.io
    except ImportError as e:
        raise ImportError("svhn: reading the .mat files needs scipy (pip install scipy)") from e
    mat = scipy.io.loadmat(str(path))
    x, y = mat["X"], mat["y"].astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise ValueError(
            f"svhn: {path} holds X {x.shape}, y {y.shape}; expected (32, 32, 3, N) and (N, 1)"
        )
    y[y == 10] = 0  # SVHN stores the digit 0 as label 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8), y


@DATASETS.register("svhn")
def svhn(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    include_extra: bool = False,
    download: bool = False,
) -> DatasetSplits:
    """SVHN (Netzer et al., 2011), cropped digits: 73,257 train and 26,032 test RGB 32x32 images.

    Args:
        root: folder holding ``train_32x32.mat`` and ``test_32x32.mat`` (torchvision's layout);
            default ``$EXITWISE_DATA_DIR``, else ``./data``.
        seed: seed of the stratified validation split.
        val_fraction: share of train kept for validation.
        include_extra: append the 531,131 ``extra_32x32.mat`` images to train.
        download: fetch the files with torchvision first (needs internet).
    """
    root = default_root(root, DATA_ENV, DATA_DEFAULT)
    splits = ["train", "test"] + (["extra"] if include_extra else [])
    if download:
        from torchvision.datasets import SVHN

        for split in splits:
            SVHN(str(root), split=split, download=True)
    loaded = {}
    for split in splits:
        path = root / f"{split}_32x32.mat"
        if not path.is_file():
            raise not_found("svhn", path.name, root, _fix("svhn"))
        loaded[split] = _svhn_mat(path)
    train = [loaded[s] for s in splits if s != "test"]
    return make_splits(
        "svhn", np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
        *loaded["test"], [str(i) for i in range(10)], seed=seed, val_fraction=val_fraction,
    )  # fmt: skip


@DATASETS.register("caltech256")
def caltech256(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    image_size: int = 64,
    crop: bool = True,
    cache_dir: str | Path | None = None,
    download: bool = False,
) -> DatasetSplits:
    """Caltech-256 (Griffin et al., 2007): 30,607 images in 257 classes (clutter included).

    There is no official test split: as in Pacheco et al. (seed 002), the images are split
    80/10/10, stratified by class, with ``seed``. Here ``val_fraction`` and ``test_fraction`` are
    shares of *all* images.

    Args:
        root: folder holding ``caltech256/256_ObjectCategories/NNN.name/*.jpg`` (torchvision's
            layout) or ``256_ObjectCategories`` itself; default ``$EXITWISE_DATA_DIR``, else
            ``./data``.
        seed: seed of the test and validation splits.
        val_fraction: share of all images kept for validation.
        test_fraction: share of all images kept for test.
        image_size: output side of the square RGB images.
        crop: centre-crop to a square before resizing (keeps aspect ratio); else squash.
        cache_dir: if given, the decoded arrays are saved there as .npz and reused.
        download: fetch the archive with torchvision first (needs internet).
    """
    check_val_fraction(test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"caltech256: val_fraction + test_fraction must be below 1, got "
            f"{val_fraction} + {test_fraction}"
        )
    root = default_root(root, DATA_ENV, DATA_DEFAULT)
    if download:
        from torchvision.datasets import Caltech256

        Caltech256(str(root), download=True)
    folder = next((f for f in (root / "caltech256" / "256_ObjectCategories",
                               root / "256_ObjectCategories") if f.is_dir()), None)  # fmt: skip
    if folder is None:
        raise not_found("caltech256", "caltech256/256_ObjectCategories/", root, _fix("caltech256"))
    categories = sorted(p for p in folder.iterdir() if p.is_dir())
    cache = None
    if cache_dir is not None:
        key = f"{len(categories)}cls_{image_size}px_crop{int(crop)}"
        cache = Path(cache_dir) / f"caltech256_{key}.npz"
    if cache is not None and cache.is_file():
        arrays = load_npz(cache, ("x", "y"))
        x, y = arrays["x"], arrays["y"]
    else:
        paths, labels = [], []
        for label, cat in enumerate(categories):
            files = sorted(f for f in cat.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise not_found("caltech256", "image files in 256_ObjectCategories/NNN.name/", root,
                            _fix("caltech256"))  # fmt: skip
        x, y = read_images(paths, image_size, crop), np.asarray(labels, dtype=np.int64)
        if cache is not None:
            save_npz_atomic(cache, x=x, y=y)
    rest, test = split_by_group(y, None, test_fraction, seed)
    names = [c.name.split(".", 1)[-1] for c in categories]
    return make_splits(
        "caltech256", x[rest], y[rest], x[test], y[test], names,
        seed=seed, val_fraction=val_fraction / (1 - test_fraction),
    )  # fmt: skip
