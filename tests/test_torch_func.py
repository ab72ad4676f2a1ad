"""Converted models under torch.func: jacrev returns the *feedback* Jacobian, vmap works."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import alignment


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)
    ).double()


def tanh_slope(pre: torch.Tensor) -> torch.Tensor:
    return torch.diag(1.0 - torch.tanh(pre) ** 2)


def pre_activations(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        h1 = net[0](x)
        h2 = net[2](torch.tanh(h1))
    return h1, h2


def test_jacrev_through_fa_mlp_is_the_feedback_path_product() -> None:
    net = alignment.convert(mlp(), "fa")
    x = torch.randn(5, dtype=torch.float64)
    h1, h2 = pre_activations(net, x)
    expected = net[4].B @ tanh_slope(h2) @ net[2].B @ tanh_slope(h1) @ net[0].B
    torch.testing.assert_close(jacrev(net)(x), expected, rtol=1e-12, atol=1e-12)
    true = net[4].weight @ tanh_slope(h2) @ net[2].weight @ tanh_slope(h1) @ net[0].weight
    assert not torch.allclose(jacrev(net)(x), true.detach())


def test_jacrev_through_pfa_mlp_uses_b_times_r() -> None:
    net = alignment.convert(mlp(), "pfa", k=3)
    x = torch.randn(5, dtype=torch.float64)
    h1, h2 = pre_activations(net, x)
    br = [(layer.B @ layer.R).detach() for layer in (net[0], net[2], net[4])]
    expected = br[2] @ tanh_slope(h2) @ br[1] @ tanh_slope(h1) @ br[0]
    torch.testing.assert_close(jacrev(net)(x), expected, rtol=1e-12, atol=1e-12)


def test_jacrev_through_dfa_mlp_injects_d_at_every_layer_input() -> None:
    """DFA: ∂/∂x sees e_out D_1 at the first layer's input (the only path to x)."""
    net = alignment.convert(mlp(), "dfa")
    x = torch.randn(2, 5, dtype=torch.float64)
    jac = jacrev(net)(x)  # (batch, C, batch, N_in)
    for n in range(2):
        torch.testing.assert_close(jac[n, :, n], net[0].D, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(jac[n, :, 1 - n], torch.zeros_like(net[0].D))


def test_jacrev_through_converted_convnet_equals_feedback_kernel_autograd() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2, dtype=torch.float64)
    layer = alignment.convert(conv, "pfa", k=2)
    x = torch.randn(2, 5, 5, dtype=torch.float64)
    jac = jacrev(lambda v: layer(v[None])[0])(x)
    kernel = layer.feedback_matrix()
    oracle = nn.Conv2d(2, 3, 3, padding=1, stride=2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        oracle.weight.copy_(kernel)
    expected = jacrev(lambda v: oracle(v[None])[0])(x)
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-12)


def test_vmap_per_sample_gradients_follow_the_rule() -> None:
    net = alignment.convert(mlp(), "fa")
    params = {k: v.detach() for k, v in net.named_parameters()}
    xs = torch.randn(4, 5, dtype=torch.float64)

    def loss(p: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(net, p, (x[None],)).square().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(4):
        one = grad(loss)(params, xs[i])
        for name in params:
            torch.testing.assert_close(per_sample[name][i], one[name], rtol=1e-12, atol=1e-12)


def test_brsf_runs_under_grad_and_vmap_with_shared_randomness() -> None:
    """brSF draws new magnitudes every forward: under vmap ask for randomness='same'."""
    net = alignment.convert(mlp(), "brsf")
    params = {k: v.detach() for k, v in net.named_parameters()}
    xs = torch.randn(3, 5, dtype=torch.float64)

    def loss(p: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(net, p, (x[None],)).square().sum()

    assert grad(loss)(params, xs[0])["0.weight"].shape == (4, 5)
    per_sample = vmap(grad(loss), in_dims=(None, 0), randomness="same")(params, xs)
    assert per_sample["0.weight"].shape == (3, 4, 5)
