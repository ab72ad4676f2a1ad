"""CIFAR ResNets of He et al. 2016 (section 4.2) with option-A (parameter-free) shortcuts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from alignment.models.init import init_weights


def _conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample spatially by 2 and zero-pad channels (no parameters)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv(16)-BN-ReLU, three stages of BasicBlocks (16, 32, 64), GAP, Linear."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(out, 1))


def cifar_resnet(depth: int, num_classes: int = 10, *, init: str = "xavier") -> CifarResNet:
    """He et al. 2016 CIFAR ResNet of ``depth = 6n + 2`` layers, option-A shortcuts, bias-free
    convolutions and a 64 -> ``num_classes`` classifier (arXiv 2405.20594, experiments)."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth must be 6n+2 (e.g. 20, 32, 44, 56, 110), got {depth}")
    return init_weights(CifarResNet((depth - 2) // 6, num_classes), init)


def resnet20(num_classes: int = 10, *, init: str = "xavier") -> CifarResNet:
    """ResNet-20 of He et al. 2016 (0.27M parameters), the paper's CIFAR-10 model."""
    return cifar_resnet(20, num_classes, init=init)


def resnet32(num_classes: int = 10, *, init: str = "xavier") -> CifarResNet:
    """ResNet-32 of He et al. 2016 (0.46M parameters)."""
    return cifar_resnet(32, num_classes, init=init)


def resnet56(num_classes: int = 10, *, init: str = "xavier") -> CifarResNet:
    """ResNet-56 of He et al. 2016 (0.85M parameters)."""
    return cifar_resnet(56, num_classes, init=init)
