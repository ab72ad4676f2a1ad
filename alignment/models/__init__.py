"""Model zoo: MNIST MLP, LeNet-5, a small ViT, CIFAR ResNets (option A) and ImageNet ResNet-18."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from alignment.models.cifar_resnet import cifar_resnet, resnet20, resnet32, resnet56
from alignment.models.init import init_weights
from alignment.models.lenet import lenet
from alignment.models.mlp import mlp
from alignment.models.resnet import resnet18
from alignment.models.vit import vit

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "lenet": lenet,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet18": resnet18,
    "vit": vit,
}

__all__ = [
    "MODELS",
    "cifar_resnet",
    "init_weights",
    "lenet",
    "mlp",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet56",
    "vit",
]
