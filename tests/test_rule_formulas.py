"""Each rule's backward against an explicit matrix computation of its equations (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import alignment
from tests.oracles import conv_grads, expected_grads

DENSE_RULES = ["bp", "fa", "usf", "frsf", "brsf", "pfa", "pfa_o", "kp"]
SPARSE_RULES = ["fa", "usf", "frsf", "brsf", "pfa", "kp"]
RULE_CASES = (
    [(rule, {}) for rule in DENSE_RULES]
    + [(rule, {"density": 0.5}) for rule in SPARSE_RULES]
    + [("pfa", {"k": 3, "path": path}) for path in ("product", "two_stage")]
    + [("pfa", {"k": 2, "density": 0.3, "path": path}) for path in ("product", "two_stage")]
    + [("pfa", {"k": 1, "b_init": "identity"}), ("pfa_o", {"path": "two_stage"})]
    + [("fa", {"init": "kaiming"}), ("pfa", {"k": 2, "init": "kaiming"})]
)
CONV_CASES = {
    "plain": dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    "stride2-nobias": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, bias=False),
    "dilation2": dict(in_channels=3, out_channels=5, kernel_size=3, padding=2, dilation=2),
    "groups2": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2),
    "depthwise": dict(in_channels=4, out_channels=8, kernel_size=3, padding=1, groups=4),
    "same-even": dict(in_channels=3, out_channels=4, kernel_size=4, padding="same"),
    "same-dilated": dict(in_channels=3, out_channels=4, kernel_size=2, padding="same", dilation=3),
    "valid-rect": dict(in_channels=3, out_channels=4, kernel_size=(2, 3), stride=(2, 1)),
}

CONV_ND_CASES = {
    "1d-plain": (1, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1)),
    "1d-stride2-dil2-nobias": (
        1,
        dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, dilation=2, bias=False),
    ),
    "1d-groups2-same-even": (
        1,
        dict(in_channels=4, out_channels=6, kernel_size=4, padding="same", groups=2),
    ),
    "3d-plain": (3, dict(in_channels=2, out_channels=4, kernel_size=3, padding=1)),
    "3d-rect-stride-groups": (
        3,
        dict(in_channels=4, out_channels=4, kernel_size=(1, 2, 3), stride=(1, 2, 1), groups=2),
    ),
    "3d-same-dilated": (
        3,
        dict(in_channels=2, out_channels=3, kernel_size=2, padding="same", dilation=(1, 2, 1)),
    ),
}
CONV_TYPES = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_INPUT = {1: (9,), 2: (7, 8), 3: (4, 5, 6)}


def _case_id(case: tuple[str, dict]) -> str:
    rule, options = case
    return rule + "".join(f"-{k}={v}" for k, v in options.items())


def _grads_of(layer: alignment.FeedbackLayer, x: torch.Tensor, delta: torch.Tensor) -> dict:
    x = x.clone().requires_grad_()
    targets = {"e_in": x, "grad_W": layer.weight}
    if layer.bias is not None:
        targets["grad_b"] = layer.bias
    if layer.rule.name in ("pfa", "pfa_o"):
        targets["grad_R"] = layer.R
    if layer.rule.name == "kp":
        targets["grad_B"] = layer.B
    y = layer(x)
    grads = torch.autograd.grad(y, list(targets.values()), delta)
    return dict(zip(targets, grads, strict=True))


def _check(layer: alignment.FeedbackLayer, x: torch.Tensor) -> None:
    with torch.no_grad():
        delta = torch.randn_like(layer(x))
    got = _grads_of(layer, x, delta)
    want = expected_grads(layer, x, delta)
    for key, value in got.items():
        torch.testing.assert_close(value, want[key], rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("case", RULE_CASES, ids=_case_id)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_backward_matches_equation(case: tuple[str, dict], bias: bool) -> None:
    rule, options = case
    torch.manual_seed(0)
    layer = alignment.convert(nn.Linear(7, 5, bias=bias, dtype=torch.float64), rule, **options)
    _check(layer, torch.randn(6, 7, dtype=torch.float64))


@pytest.mark.parametrize("case", RULE_CASES, ids=_case_id)
@pytest.mark.parametrize("geometry", list(CONV_CASES), ids=list(CONV_CASES))
def test_conv_backward_matches_equation(case: tuple[str, dict], geometry: str) -> None:
    rule, options = case
    torch.manual_seed(0)
    conv = nn.Conv2d(**CONV_CASES[geometry], dtype=torch.float64)
    layer = alignment.convert(conv, rule, **options)
    _check(layer, torch.randn(2, conv.in_channels, 7, 8, dtype=torch.float64))


@pytest.mark.parametrize("case", RULE_CASES, ids=_case_id)
@pytest.mark.parametrize("geometry", list(CONV_ND_CASES), ids=list(CONV_ND_CASES))
def test_conv1d_and_conv3d_backward_match_equation(case: tuple[str, dict], geometry: str) -> None:
    rule, options = case
    dims, kwargs = CONV_ND_CASES[geometry]
    torch.manual_seed(0)
    conv = CONV_TYPES[dims](**kwargs, dtype=torch.float64)
    layer = alignment.convert(conv, rule, **options)
    assert type(layer).__name__ == f"Conv{dims}d"
    _check(layer, torch.randn(2, conv.in_channels, *CONV_INPUT[dims], dtype=torch.float64))


def test_pfa_auto_path_picks_two_stage_for_small_batches_and_stays_exact() -> None:
    torch.manual_seed(0)
    layer = alignment.convert(nn.Linear(64, 32, dtype=torch.float64), "pfa", k=10)
    assert layer.rule._two_stage(layer, torch.zeros(2, 64))
    assert not layer.rule._two_stage(layer, torch.zeros(4096, 64))
    for batch in (2, 4096):
        _check(layer, torch.randn(batch, 64, dtype=torch.float64))


def test_linear_layer_accepts_extra_leading_dims() -> None:
    torch.manual_seed(0)
    layer = alignment.convert(nn.Linear(4, 3, dtype=torch.float64), "pfa", k=2)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    got = _grads_of(layer, x, delta := torch.randn(2, 5, 3, dtype=torch.float64))
    flat = expected_grads(layer, x.reshape(10, 4), delta.reshape(10, 3))
    torch.testing.assert_close(got["e_in"], flat["e_in"].reshape(2, 5, 4))
    torch.testing.assert_close(got["grad_W"], flat["grad_W"])
    torch.testing.assert_close(got["grad_R"], flat["grad_R"])


@pytest.mark.parametrize("density", [1.0, 0.5])
def test_dfa_linear_sends_output_error_through_D(density: float) -> None:
    torch.manual_seed(0)
    layer = alignment.convert(nn.Linear(7, 4, dtype=torch.float64), "dfa", density=density)
    assert layer.D.shape == (4, 7)
    _check(layer, torch.randn(5, 7, dtype=torch.float64))


ALL_CONV = {f"2d-{k}": (2, v) for k, v in CONV_CASES.items()} | CONV_ND_CASES


@pytest.mark.parametrize("geometry", list(ALL_CONV), ids=list(ALL_CONV))
def test_dfa_conv_tiles_output_error_over_the_output_grid(geometry: str) -> None:
    """conv(dfa) → flatten → linear(dfa): e_in(conv) = convNd_input(D, tile(e_out)) (dense D)."""
    torch.manual_seed(0)
    dims, kwargs = ALL_CONV[geometry]
    conv = CONV_TYPES[dims](**kwargs, dtype=torch.float64)
    shape = (2, conv.in_channels, *CONV_INPUT[dims])
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    out_shape = conv(x).shape
    n_hidden = out_shape[1:].numel()
    net = alignment.convert(
        nn.Sequential(conv, nn.Flatten(), nn.Linear(n_hidden, 3, dtype=torch.float64)), "dfa"
    )
    layer, head = net[0], net[2]
    assert layer.D.shape == (3, conv.in_channels, *conv.kernel_size)
    y = net(x)
    e_out = torch.randn_like(y)
    e_in, grad_w = torch.autograd.grad(y, [x, layer.weight], e_out)
    grid = out_shape[2:]
    tiled = e_out.reshape(*e_out.shape, *(1,) * len(grid)).expand(-1, -1, *grid)
    want_e_in, _ = conv_grads(layer, x.detach(), tiled, layer.D, groups=1)
    delta = (e_out @ head.D).reshape(out_shape)
    _, want_grad_w = conv_grads(layer, x.detach(), delta, layer.weight.detach(), layer.groups)
    torch.testing.assert_close(e_in, want_e_in, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_w, want_grad_w, rtol=1e-10, atol=1e-12)
