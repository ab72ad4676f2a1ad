"""Fully connected ReLU network (the paper's MNIST model is 784-512-512-10)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from alignment.models.init import init_weights


def mlp(
    in_features: int = 784,
    hidden: Sequence[int] = (512, 512),
    num_classes: int = 10,
    *,
    init: str = "xavier",
) -> nn.Sequential:
    """Flatten -> (Linear, ReLU) per hidden width -> Linear classifier, biases on.

    Defaults reproduce the MNIST FFN of Li & Benna (arXiv 2405.20594, experiments): 784-512-512-10.
    """
    layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    width = in_features
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"], layers[f"relu{i}"] = nn.Linear(width, h), nn.ReLU()
        width = h
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
    return init_weights(nn.Sequential(OrderedDict(layers)), init)
