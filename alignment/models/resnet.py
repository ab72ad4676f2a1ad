"""ImageNet ResNet-18 (He et al. 2016) from torchvision, randomly initialised."""

from __future__ import annotations

from torch import nn

from alignment.models.init import init_weights


def resnet18(num_classes: int = 1000, *, init: str = "xavier") -> nn.Module:
    """torchvision ResNet-18 without pretrained weights, re-initialised with ``init``.

    The paper's ImageNet model (arXiv 2405.20594, experiments).
    """
    from torchvision.models import resnet18 as torchvision_resnet18  # slow import: only when used

    return init_weights(torchvision_resnet18(weights=None, num_classes=num_classes), init)
