"""Convolution geometry shared by the forward and by every feedback backward.

The backward of a convolution is `aten.convolution_backward`, which needs explicit integer padding.
``padding='same'`` with an even effective kernel pads asymmetrically (the extra row/column goes on
the bottom/right, as in ``torch.nn.functional.conv2d``); the backward then pads the input by hand,
runs with zero padding and crops the input gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from alignment.layers.autocast import autocast_operands


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding, dilation and groups of a 2-d convolution (padding as given to conv2d)."""

    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The convolution itself, exactly as ``nn.Conv2d`` computes it."""
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def explicit_padding(self, kernel_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero padding of the input."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            pads = []
            for k, d in zip(kernel_size, self.dilation, strict=True):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return (pads[0], pads[1], pads[2], pads[3])
        ph, pw = self.padding
        return (ph, ph, pw, pw)


def conv_backward(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    geometry: ConvGeometry,
    *,
    need_input: bool,
    need_weight: bool,
    need_bias: bool,
    groups: int | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """(grad_input, grad_weight, grad_bias) of ``conv2d(x, weight)`` for the given ``grad_out``.

    ``grad_input`` uses whatever kernel is passed as ``weight``: passing a feedback kernel instead
    of W is how every rule changes the error it sends backwards, at exactly BP's cost.
    ``groups`` overrides the geometry's groups (DFA's feedback kernels are dense).
    """
    groups = geometry.groups if groups is None else groups
    top, bottom, left, right = geometry.explicit_padding(tuple(weight.shape[-2:]))
    symmetric = top == bottom and left == right
    x_in = x if symmetric else F.pad(x, (left, right, top, bottom))
    padding = [top, left] if symmetric else [0, 0]
    grad_out, x_in, weight = autocast_operands(grad_out, x_in, weight)
    grad_in, grad_w, grad_b = torch.ops.aten.convolution_backward(
        grad_out,
        x_in,
        weight,
        [grad_out.shape[-3]] if need_bias else None,
        list(geometry.stride),
        padding,
        list(geometry.dilation),
        False,
        [0, 0],
        groups,
        [need_input, need_weight, need_bias],
    )
    if need_input and not symmetric:
        grad_in = grad_in[..., top : top + x.shape[-2], left : left + x.shape[-1]]
    return (
        grad_in if need_input else None,
        grad_w if need_weight else None,
        grad_b if need_bias else None,
    )
