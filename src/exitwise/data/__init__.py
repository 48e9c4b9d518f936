"""Datasets held in memory as uint8 arrays, behind one registry and one loader.

Registered: ``synthetic-signs`` (built in, offline), ``npz``, ``gtsrb``, ``mnist``, ``cifar10``,
``svhn``, ``caltech256``, ``caltech101``. Load any of them with :func:`load_dataset`; batch
them with :func:`iterate_batches`.
"""

# imported to register their datasets
from . import arrays, caltech101, gtsrb, mnist, synthetic_signs, torchvision_sets  # noqa: F401
from .base import DATASETS, ArrayDataset, DatasetSplits, load_dataset, split_by_group
from .batching import iterate_batches

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetSplits",
    "iterate_batches",
    "load_dataset",
    "split_by_group",
]
