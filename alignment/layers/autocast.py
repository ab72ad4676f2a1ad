"""Mixed precision for the rules' autograd Functions: the backward replays the forward's autocast.

Under ``torch.autocast`` a Function's forward (``F.linear``, ``F.conv2d``) runs in the autocast
dtype, but its backward runs in whatever autocast state the caller of ``loss.backward()`` has,
usually none, so δ (bf16/fp16) would meet fp32 feedback tensors. :func:`records_autocast` stores
the forward's state on ``ctx`` and :func:`replays_autocast` runs the backward under it, as
``torch.amp.custom_bwd`` does, for whatever device the layer's input is on: the feedback products
(e_in = δF, grad_W = δᵀx, PFA's a = δB) then run in the dtype torch uses for the forward op, with
torch's own accumulation (fp32 inside the GEMMs). The autograd engine casts each returned gradient
to its input's dtype, so fp32 parameters receive fp32 gradients. Ops that autocast does not cover
(``aten.convolution_backward``) get their operands cast by :func:`autocast_operands`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def records_autocast(setup_context: Callable) -> Callable:
    """Decorate a split-form ``setup_context``: remember the autocast state of the forward."""

    @functools.wraps(setup_context)
    def wrapped(ctx: Any, inputs: tuple, output: Any) -> None:
        device = inputs[0].device.type
        ctx.autocast = (
            device,
            torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device),
        )
        setup_context(ctx, inputs, output)

    return wrapped


def replays_autocast(backward: Callable) -> Callable:
    """Decorate ``backward``: run it under the autocast state :func:`records_autocast` stored."""

    @functools.wraps(backward)
    def wrapped(ctx: Any, *grads: Tensor) -> Any:
        device, enabled, dtype = ctx.autocast
        if torch.is_autocast_enabled(device) == enabled and (
            not enabled or torch.get_autocast_dtype(device) == dtype
        ):
            return backward(ctx, *grads)
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            return backward(ctx, *grads)

    return wrapped


def autocast_operands(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The floating tensors cast to the autocast dtype when autocast is on for their device
    (what autocast does to a convolution's operands); unchanged otherwise."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)
