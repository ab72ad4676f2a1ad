"""Tests for alignment.models: shapes, parameter counts, init, errors, copy/pickle."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from alignment.models import (
    MODELS,
    cifar_resnet,
    init_weights,
    lenet,
    mlp,
    resnet18,
    resnet20,
    resnet32,
    resnet56,
)
from alignment.models.cifar_resnet import ShortcutA

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("build", "shape", "classes"),
    [
        (lambda: mlp(), MNIST, 10),
        (lambda: mlp(hidden=(32,), num_classes=7), MNIST, 7),
        (lambda: lenet(), MNIST, 10),
        (lambda: lenet(3, 10, input_size=32), CIFAR, 10),
        (lambda: resnet20(), CIFAR, 10),
        (lambda: resnet32(100), CIFAR, 100),
        (lambda: resnet56(), CIFAR, 10),
    ],
    ids=["mlp", "mlp-narrow", "lenet-mnist", "lenet-cifar", "resnet20", "resnet32", "resnet56"],
)
def test_output_shapes(build, shape, classes) -> None:
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_resnet18_output_shape() -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)


def test_mlp_architecture() -> None:
    model = mlp()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 512), (512, 10)]
    assert all(m.bias is not None for m in linears)


def test_resnet20_parameter_count() -> None:
    assert _n_params(resnet20()) == 269_722
    assert _n_params(cifar_resnet(20)) == 269_722


def test_cifar_resnet_convs_are_bias_free() -> None:
    model = resnet20()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19
    assert all(m.bias is None for m in convs)
    assert model.fc.in_features == 64 and model.fc.bias is not None


def test_option_a_shortcut_is_parameter_free() -> None:
    model = resnet20()
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2
    assert all(_n_params(s) == 0 for s in shortcuts)
    x = torch.randn(2, 16, 32, 32)
    y = ShortcutA(8)(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()


@pytest.mark.parametrize("init", ["xavier", "kaiming"])
def test_init_weights_zero_biases_and_deterministic(init: str) -> None:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return lenet(init=init)

    a, b = build(), build()
    for m in a.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            assert m.bias is not None and not m.bias.any()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_init_weights_returns_model_and_leaves_batchnorm() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    nn.init.constant_(model[1].weight, 2.0)
    nn.init.constant_(model[1].bias, 3.0)
    nn.init.constant_(model[2].bias, 1.0)
    assert init_weights(model) is model
    assert torch.all(model[1].weight == 2.0) and torch.all(model[1].bias == 3.0)
    assert not model[2].bias.any()


def test_xavier_bound() -> None:
    torch.manual_seed(0)
    fc = init_weights(nn.Linear(100, 50))
    bound = (6 / (100 + 50)) ** 0.5
    assert fc.weight.abs().max() <= bound


def test_init_weights_subclasses() -> None:
    class MyLinear(nn.Linear):
        pass

    layer = MyLinear(3, 2)
    nn.init.constant_(layer.bias, 1.0)
    init_weights(layer)
    assert not layer.bias.any()


def test_bad_init_raises() -> None:
    with pytest.raises(ValueError, match="xavier") as info:
        init_weights(nn.Linear(2, 2), "orthogonal")
    assert "kaiming" in str(info.value)
    with pytest.raises(ValueError, match="kaiming"):
        mlp(init="bogus")


@pytest.mark.parametrize("depth", [0, 2, 19, 21])
def test_bad_depth_raises(depth: int) -> None:
    with pytest.raises(ValueError, match=r"6n\+2"):
        cifar_resnet(depth)


def test_models_registry() -> None:
    assert set(MODELS) == {"mlp", "lenet", "resnet20", "resnet32", "resnet56", "resnet18", "vit"}
    assert MODELS["resnet20"] is resnet20


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet20", "vit"])
def test_deepcopy_and_pickle(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(2, *(MNIST if name != "resnet20" else CIFAR))
    with torch.no_grad():
        ref = model(x)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert torch.equal(clone(x), ref)
