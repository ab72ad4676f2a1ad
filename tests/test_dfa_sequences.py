"""DFA on outputs shaped (batch, …, C): each position's error is projected by D (float64 oracles).

A layer whose leading dims are the output's positions gets its own position's error,
e_in[b, t] = e_out[b, t] D; any other layer gets the error summed over the output positions,
tiled over its own positions (conv: over its output grid), as for a (batch, C) output.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import alignment
from tests.oracles import conv_grads

D64 = torch.float64


class Transposed(nn.Module):
    """Swap the last two dims (mixes positions through a Linear along T)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-1, -2)


def test_per_token_logits_get_each_positions_error() -> None:
    torch.manual_seed(0)
    net = alignment.convert(
        nn.Sequential(nn.Linear(4, 6, dtype=D64), nn.Tanh(), nn.Linear(6, 3, dtype=D64)), "dfa"
    )
    first, head = net[0], net[2]
    x = torch.randn(2, 5, 4, dtype=D64, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 5, 3)
    e_out = torch.randn_like(y)
    e_in, grad_w1, grad_w2 = torch.autograd.grad(y, [x, first.weight, head.weight], e_out)
    h = torch.tanh(x.detach() @ first.weight.detach().T + first.bias.detach())
    want_e_in = torch.einsum("btc,ci->bti", e_out, first.D)
    delta1 = torch.einsum("btc,cj->btj", e_out, head.D) * (1 - h**2)
    torch.testing.assert_close(e_in, want_e_in, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        grad_w1, torch.einsum("btj,bti->ji", delta1, x.detach()), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        grad_w2, torch.einsum("btc,btj->cj", e_out, h), rtol=1e-10, atol=1e-12
    )


def test_layers_on_other_positions_get_the_summed_error_tiled() -> None:
    """x (B, T, 4) → Linear(4, 6) → (B, 6, T) → Linear(T, P) → (B, P, 6) → Linear(6, 3):
    the middle layer's positions are the 6 features, not the output's P positions."""
    torch.manual_seed(0)
    T, P = 5, 2
    net = alignment.convert(
        nn.Sequential(
            nn.Linear(4, 6, dtype=D64),
            Transposed(),
            nn.Linear(T, P, dtype=D64),
            Transposed(),
            nn.Linear(6, 3, dtype=D64),
        ),
        "dfa",
    )
    x = torch.randn(3, T, 4, dtype=D64, requires_grad=True)
    seen = {}
    net[1].register_forward_hook(lambda m, a, out: seen.setdefault("h", out))
    y = net(x)
    assert y.shape == (3, P, 3)
    e_out = torch.randn_like(y)
    e_first, e_mid = torch.autograd.grad(y, [x, seen["h"]], e_out)
    pooled = e_out.sum(1)
    # the middle layer's input (B, 6, T): the summed error, tiled over its 6 rows
    torch.testing.assert_close(
        e_mid, (pooled @ net[2].D)[:, None, :].expand(3, 6, T), rtol=1e-10, atol=1e-12
    )
    # the first layer's input (B, T, 4): T ≠ P positions, so also the summed error, tiled
    torch.testing.assert_close(
        e_first, (pooled @ net[0].D)[:, None, :].expand(3, T, 4), rtol=1e-10, atol=1e-12
    )


def test_conv_layers_under_sequence_logits_get_the_summed_error_tiled() -> None:
    """Conv1d(dfa) → (B, C_out, L) → transpose → Linear → logits (B, L, C)."""
    torch.manual_seed(0)
    conv = nn.Conv1d(2, 4, 3, padding=1, dtype=D64)
    net = alignment.convert(nn.Sequential(conv, Transposed(), nn.Linear(4, 3, dtype=D64)), "dfa")
    layer = net[0]
    x = torch.randn(2, 2, 6, dtype=D64, requires_grad=True)
    y = net(x)
    e_out = torch.randn_like(y)
    (e_in,) = torch.autograd.grad(y, [x], e_out)
    tiled = e_out.sum(1)[:, :, None].expand(-1, -1, 6)
    want, _ = conv_grads(layer, x.detach(), tiled, layer.D, groups=1)
    torch.testing.assert_close(e_in, want, rtol=1e-10, atol=1e-12)


class SequenceFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


def test_a_batch_size_mismatch_in_dim_0_is_refused() -> None:
    net = alignment.convert(nn.Sequential(nn.Linear(4, 3), SequenceFirst()), "dfa")
    with pytest.raises(ValueError, match="DFA takes dim 0 as the batch"):
        net(torch.randn(3, 5, 4, requires_grad=True))


def test_converting_again_releases_the_dfa_tap_through_rule_release() -> None:
    net = alignment.convert(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), "dfa")
    assert net._forward_hooks and net._forward_pre_hooks
    again = alignment.convert(net, "fa")
    assert not again._forward_hooks and not again._forward_pre_hooks
    assert not any("dfa_context" in m.__dict__ for m in again.modules())
    assert net._forward_hooks  # the original keeps its own tap
