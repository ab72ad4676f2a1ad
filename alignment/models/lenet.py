"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from alignment.models.init import init_weights


def lenet(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    input_size: int = 28,
    init: str = "xavier",
) -> nn.Sequential:
    """Classic LeNet-5: conv5x5(6)-pool-conv5x5(16)-pool-fc120-fc84-fc(num_classes).

    The first convolution is padded by 2 for 28x28 inputs (MNIST) so that both MNIST and
    unpadded 32x32 inputs (CIFAR) reach 16x5x5 features before the classifier.
    """
    pad = 2 if input_size == 28 else 0
    side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"input_size {input_size} is too small for LeNet-5")
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 6, kernel_size=5, padding=pad),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 16, kernel_size=5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16 * side * side, 120),
            relu3=nn.ReLU(),
            fc2=nn.Linear(120, 84),
            relu4=nn.ReLU(),
            fc3=nn.Linear(84, num_classes),
        )
    )
    return init_weights(model, init)
