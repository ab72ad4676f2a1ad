"""Conv1d, Conv2d and Conv3d layers whose backward follows a learning rule: one implementation
for every number of spatial dimensions, from one
:class:`~alignment.layers.conv_geometry.ConvGeometry`. Their e_in is the transposed convolution
of δ with the feedback kernel (BP: with W itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from alignment.layers.base import FeedbackLayer
from alignment.layers.conv_geometry import ConvGeometry
from alignment.layers.feedback import Direct, TwoStage, resolve_rule
from alignment.layers.functions import ConvDirect, ConvFeedback, ConvTwoStage

if TYPE_CHECKING:
    from alignment.rules.base import Rule


class ConvLayer(FeedbackLayer):
    """What Conv1d, Conv2d and Conv3d share: ``nn.Conv{d}d`` with the backward of ``rule``.

    e_in = conv{d}d_input(input shape, F, δ) with W's stride/padding/dilation/groups, where F is
    the rule's feedback kernel; grad_W = conv{d}d_weight(x, δ). Any stride, padding (numbers,
    'same', 'valid', any padding_mode), dilation, groups, with or without bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        rule: Rule | str | None = "bp",
        device: object = None,
        dtype: object = None,
        **options: object,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=dtype,
        )
        if rule is not None:
            self.attach_rule(resolve_rule(rule, **options))

    @property
    def geometry(self) -> ConvGeometry:
        """Geometry of the convolution applied after any non-zero padding_mode pad."""
        padding = self.padding if self.padding_mode == "zeros" else (0,) * len(self.stride)
        return ConvGeometry(tuple(self.stride), padding, tuple(self.dilation), self.groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        geometry = self.geometry
        if not self.training_graph_needed(x):
            return geometry.forward(x, self.weight, self.bias)
        feedback = self.rule.feedback(self, x)
        if isinstance(feedback, TwoStage):
            return ConvTwoStage.apply(x, self.weight, self.bias, feedback.B, feedback.R, geometry)
        if isinstance(feedback, Direct):
            y, carrier = ConvDirect.apply(x, self.weight, self.bias, feedback.D, geometry)
            feedback.sink(carrier)
            return y
        return ConvFeedback.apply(x, self.weight, self.bias, feedback, geometry)

    def product(self, B: Tensor, R: Tensor) -> Tensor:
        """(B·R)[o,i,k…] = Σ_m B[o,m] R[m,i,k…]: one matrix product with R flattened."""
        return (B @ R.reshape(R.shape[0], -1)).view(B.shape[0], *R.shape[1:])

    @staticmethod
    def constructor_args(module: nn.Module) -> dict:
        return {
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": module.kernel_size,
            "stride": module.stride,
            "padding": module.padding,
            "dilation": module.dilation,
            "groups": module.groups,
            "bias": module.bias is not None,
            "padding_mode": module.padding_mode,
            "rule": None,
        }


class Conv1d(ConvLayer, nn.Conv1d):
    """``nn.Conv1d`` with the backward of ``rule`` (see :class:`ConvLayer`).

    >>> Conv1d(2, 4, 3, rule="fa").B.shape
    torch.Size([4, 2, 3])
    """


class Conv2d(ConvLayer, nn.Conv2d):
    """``nn.Conv2d`` with the backward of ``rule`` (see :class:`ConvLayer`)."""


class Conv3d(ConvLayer, nn.Conv3d):
    """``nn.Conv3d`` with the backward of ``rule`` (see :class:`ConvLayer`)."""
