"""The contract every rule in ``alignment.RULES`` keeps, on a linear and a conv network."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import alignment
from alignment.convert import LAYERS

RULES = list(alignment.RULES)
LEARNED = {"pfa": {"R"}, "pfa_o": {"R"}, "kp": {"B"}}


def linear_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, groups=2, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
    )


def conv1d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(4, 4, 3, stride=2, groups=2, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 3, 3),
    )


def conv3d_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(2, 3, 3, padding=1),
        nn.Tanh(),
        nn.Conv3d(3, 2, 2, stride=2, bias=False),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2 * 1, 3),
    )


class AttentionNet(nn.Module):
    """Tokens → Linear → self-attention (+ residual) → mean over tokens → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(h.mean(1))


def attention_net() -> nn.Module:
    return AttentionNet()


NETS = {
    "linear": (linear_net, (4, 6)),
    "conv": (conv_net, (4, 2, 7, 7)),
    "conv1d": (conv1d_net, (4, 2, 7)),
    "conv3d": (conv3d_net, (4, 2, 4, 5, 3)),
    "attention": (attention_net, (4, 5, 6)),
}
"""One small network per kind of converted layer; :func:`test_every_layer_type_has_a_net` fails
when ``alignment.convert.LAYERS`` gains a type that no network here contains."""


def build(rule: str, net: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    factory, _ = NETS[net]
    torch.manual_seed(seed)
    options = {"density": 0.5} if rule not in ("bp", "pfa_o") else {}
    return alignment.convert(factory().to(dtype), rule, **options)


def batch(net: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(NETS[net][1], generator=torch.Generator().manual_seed(1), dtype=dtype)


def all_grads(model: nn.Module, x: torch.Tensor, e_out: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    params = [p for p in model.parameters()]
    return list(torch.autograd.grad(model(x), [x, *params], e_out))


def feedback_layers(model: nn.Module) -> list[alignment.FeedbackLayer]:
    return [m for m in model.modules() if isinstance(m, alignment.FeedbackLayer)]


@pytest.fixture(params=RULES)
def rule(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=list(NETS))
def net(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(rule: str, net: str, dtype: torch.dtype) -> None:
    model = build(rule, net, dtype=dtype)
    x = batch(net, dtype)
    y = model(x)
    assert y.shape == (x.shape[0], 3) and y.dtype == dtype
    grads = all_grads(model, x, torch.ones_like(y))
    for tensor, grad in zip([x, *model.parameters()], grads, strict=True):
        assert grad.shape == tensor.shape and grad.dtype == dtype
    for layer in feedback_layers(model):
        fb = layer.feedback_matrix()
        assert fb.dtype == dtype and not fb.requires_grad
        expected = layer.weight.shape if rule != "dfa" else None
        if expected is not None:
            assert fb.shape == expected


def test_feedback_tensors_follow_device_and_dtype_moves(rule: str, net: str) -> None:
    model = build(rule, net, dtype=torch.float32).to(torch.float64)
    for tensor in [*model.parameters(), *model.buffers()]:
        assert tensor.dtype == torch.float64
    meta = model.to("meta")
    for tensor in [*meta.parameters(), *meta.buffers()]:
        assert tensor.device.type == "meta"


def test_state_dict_round_trip(rule: str, net: str) -> None:
    source, target = build(rule, net, seed=0), build(rule, net, seed=1)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    for (name, a), (_, b) in zip(
        source.state_dict().items(), target.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    x = batch(net)
    torch.manual_seed(5)  # brsf draws its magnitudes at every forward
    ga = all_grads(source, x, torch.ones(x.shape[0], 3, dtype=torch.float64))
    torch.manual_seed(5)
    gb = all_grads(target, x, torch.ones(x.shape[0], 3, dtype=torch.float64))
    for a, b in zip(ga, gb, strict=True):
        assert torch.equal(a, b)


def test_state_dict_names_the_paper_tensors(rule: str) -> None:
    model = build(rule, "linear")
    names = {name.split(".")[-1] for name in model.state_dict()}
    expected = {
        "fa": {"B", "B_mask"},
        "kp": {"B", "B_mask"},
        "frsf": {"B", "B_mask"},
        "brsf": {"B", "B_mask"},
        "usf": {"feedback_mask"},
        "dfa": {"D", "D_mask"},
        "pfa": {"B", "R", "B_mask", "R_mask"},
        "pfa_o": {"B", "R"},
        "bp": set(),
    }[rule]
    assert names == {"weight", "bias"} | expected


def test_determinism_under_a_seed(rule: str, net: str) -> None:
    a, b = build(rule, net, seed=3), build(rule, net, seed=3)
    for (name, ta), (_, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(ta, tb), name
    x = batch(net)
    torch.manual_seed(0)
    ga = all_grads(a, x, torch.ones(x.shape[0], 3, dtype=torch.float64))
    torch.manual_seed(0)
    gb = all_grads(b, x, torch.ones(x.shape[0], 3, dtype=torch.float64))
    assert all(torch.equal(u, v) for u, v in zip(ga, gb, strict=True))
    c = build(rule, net, seed=4)
    if rule != "bp":
        different = [
            not torch.equal(ta, tc)
            for (name, ta), (_, tc) in zip(
                a.state_dict().items(), c.state_dict().items(), strict=True
            )
            if name.split(".")[-1] in ("B", "R", "D", "B_mask", "R_mask", "D_mask", "feedback_mask")
        ]
        assert any(different)


def test_fixed_feedback_never_receives_a_gradient(rule: str, net: str) -> None:
    model = build(rule, net)
    learned = LEARNED.get(rule, set())
    for layer in feedback_layers(model):
        params = {name for name, _ in layer.named_parameters(recurse=False)}
        assert params == {"weight", "bias"} & {n for n, _ in layer.named_parameters()} | learned
        for name, buffer in layer.named_buffers(recurse=False):
            assert not buffer.requires_grad, name
    x = batch(net)
    model(x).square().sum().backward()
    for layer in feedback_layers(model):
        for _, buffer in layer.named_buffers(recurse=False):
            assert buffer.grad is None
        for name in learned:
            assert getattr(layer, name).grad is not None


def test_backward_is_linear_in_the_incoming_error(rule: str, net: str) -> None:
    model = build(rule, net)
    x = batch(net).requires_grad_()
    torch.manual_seed(0)
    y = model(x)
    g = torch.Generator().manual_seed(2)
    e1, e2 = (torch.randn(y.shape, generator=g, dtype=y.dtype) for _ in range(2))
    inputs = [x, *model.parameters()]
    grad = lambda e: torch.autograd.grad(y, inputs, e, retain_graph=True)  # noqa: E731
    combined = grad(2.0 * e1 - 3.0 * e2)
    for c, a, b in zip(combined, grad(e1), grad(e2), strict=True):
        torch.testing.assert_close(c, 2.0 * a - 3.0 * b, rtol=1e-10, atol=1e-12)


def test_forward_output_does_not_depend_on_the_rule(rule: str, net: str) -> None:
    torch.manual_seed(0)
    plain = NETS[net][0]().double()
    converted = alignment.convert(plain, rule)
    x = batch(net)
    assert torch.equal(plain(x), converted(x))
    with torch.no_grad():
        assert torch.equal(plain(x), converted(x))


def test_every_layer_type_has_a_net() -> None:
    covered = {type(m) for factory, _ in NETS.values() for m in factory().modules()}
    assert set(LAYERS) - covered == set()


def test_rule_has_an_equation_and_a_docstring(rule: str) -> None:
    cls = alignment.RULES[rule]
    assert cls.name == rule and cls.equation and cls.__doc__
