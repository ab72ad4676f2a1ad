"""ImageNet ResNet-18 (He et al. 2016) from torchvision, randomly initialised."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18 as _tv_resnet18

from alignment.models.init import init_weights


def resnet18(num_classes: int = 1000, *, init: str = "xavier") -> nn.Module:
    """torchvision ResNet-18 without pretrained weights, re-initialised with ``init``.

    The paper's ImageNet model (PFA.md section 5).
    """
    return init_weights(_tv_resnet18(weights=None, num_classes=num_classes), init)
