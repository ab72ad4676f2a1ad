"""Convolution geometry shared by the forward and by every feedback backward, for 1, 2 or 3
spatial dimensions (Conv1d, Conv2d, Conv3d): one code path, the dimension is len(stride).

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

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, padding, dilation and groups of a d-dimensional convolution (padding as given to
    ``conv{d}d``: a tuple of d ints, 'same' or 'valid')."""

    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int

    @property
    def dims(self) -> int:
        """The number of spatial dimensions d."""
        return len(self.stride)

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The convolution itself, exactly as ``nn.Conv{d}d`` computes it."""
        conv = CONV[self.dims]
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def explicit_padding(self, kernel_size: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        """((before, after) zero padding of the input) per spatial dimension."""
        if self.padding == "valid":
            return ((0, 0),) * self.dims
        if self.padding == "same":
            pads = []
            for k, d in zip(kernel_size, self.dilation, strict=True):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        return tuple((p, p) for p in self.padding)


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
    """(grad_input, grad_weight, grad_bias) of ``conv{d}d(x, weight)`` for the given ``grad_out``.

    ``grad_input`` uses whatever kernel is passed as ``weight``: passing a feedback kernel instead
    of W is how every rule changes the error it sends backwards, at exactly BP's cost.
    ``groups`` overrides the geometry's groups (DFA's feedback kernels are dense).
    """
    groups = geometry.groups if groups is None else groups
    d = geometry.dims
    pads = geometry.explicit_padding(tuple(weight.shape[-d:]))
    symmetric = all(lo == hi for lo, hi in pads)
    if symmetric:
        x_in, padding = x, [lo for lo, _ in pads]
    else:
        x_in = F.pad(x, [p for pair in reversed(pads) for p in pair])
        padding = [0] * d
    grad_out, x_in, weight = autocast_operands(grad_out, x_in, weight)
    grad_in, grad_w, grad_b = torch.ops.aten.convolution_backward(
        grad_out,
        x_in,
        weight,
        [grad_out.shape[-d - 1]] if need_bias else None,
        list(geometry.stride),
        padding,
        list(geometry.dilation),
        False,
        [0] * d,
        groups,
        [need_input, need_weight, need_bias],
    )
    if need_input and not symmetric:
        crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, x.shape[-d:], strict=True))
        grad_in = grad_in[(..., *crop)]
    return (
        grad_in if need_input else None,
        grad_w if need_weight else None,
        grad_b if need_bias else None,
    )
