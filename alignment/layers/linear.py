"""A Linear layer whose backward follows a learning rule (spec §2, linear column)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from alignment.layers.base import FeedbackLayer
from alignment.layers.feedback import Direct, TwoStage, resolve_rule
from alignment.layers.functions import (
    CarrierLayout,
    LinearDirect,
    LinearFeedback,
    LinearTwoStage,
)

if TYPE_CHECKING:
    from alignment.rules.base import Rule


class Linear(FeedbackLayer, nn.Linear):
    """``nn.Linear`` with the backward of ``rule``: y = xWᵀ + b, e_in = δF, grad_W = δᵀx.

    >>> layer = Linear(784, 512, rule="pfa", k=10)
    >>> layer.B.shape, layer.R.shape
    (torch.Size([512, 5120]), torch.Size([5120, 784]))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rule: Rule | str | None = "bp",
        device: object = None,
        dtype: object = None,
        **options: object,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if rule is not None:
            self.attach_rule(resolve_rule(rule, **options))

    def forward(self, x: Tensor, carrier_layout: CarrierLayout | None = None) -> Tensor:
        """y = xWᵀ + b. ``carrier_layout`` (DFA only) maps x's leading dims onto the model's
        batch-first layout when they are laid out otherwise (attention's projections)."""
        if not self.training_graph_needed(x):
            return F.linear(x, self.weight, self.bias)
        feedback = self.rule.feedback(self, x)
        if isinstance(feedback, TwoStage):
            return LinearTwoStage.apply(x, self.weight, self.bias, feedback.B, feedback.R)
        if isinstance(feedback, Direct):
            y, carrier = LinearDirect.apply(x, self.weight, self.bias, feedback.D, carrier_layout)
            feedback.sink(carrier)
            return y
        return LinearFeedback.apply(x, self.weight, self.bias, feedback)

    def product(self, B: Tensor, R: Tensor) -> Tensor:
        return B @ R

    @staticmethod
    def constructor_args(module: nn.Module) -> dict:
        return {
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
            "rule": None,
        }
