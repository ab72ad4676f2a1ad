"""A Linear layer whose backward follows a learning rule."""

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

    def forward(self, x: Tensor, layout: str | None = None, rows: slice | None = None) -> Tensor:
        """y = xWᵀ + b.

        Attention's projections (:mod:`alignment.layers.attention`) pass x batch first and ask
        for torch's own layout of the product, so that y is bitwise torch's: ``layout='tbe'``
        multiplies x.transpose(0, 1) (T, B, E), ``'tbe_flat'`` its (T·B, E) flattening; y comes
        back batch first. ``rows`` uses only those rows of W, b and the feedback (torch's split
        of a packed in-projection), so their gradients land in those rows.
        """
        if layout is None:
            return self._product(x, None, rows)
        xt = x.transpose(0, 1)
        lead = tuple(xt.shape[:2])
        carrier = CarrierLayout(lead, (1, 0))
        if layout == "tbe":
            return self._product(xt, carrier, rows).transpose(0, 1)
        y = self._product(xt.reshape(-1, xt.shape[-1]), carrier, rows)
        return y.view(*lead, y.shape[-1]).transpose(0, 1)

    def _product(self, x: Tensor, carrier: CarrierLayout | None, rows: slice | None) -> Tensor:
        weight, bias = self.weight, self.bias
        if rows is not None:
            weight, bias = weight[rows], None if bias is None else bias[rows]
        if not self.training_graph_needed(x):
            return F.linear(x, weight, bias)
        feedback = self.rule.feedback(self, x)
        if isinstance(feedback, TwoStage):
            B = feedback.B if rows is None else feedback.B[rows]
            return LinearTwoStage.apply(x, weight, bias, B, feedback.R)
        if isinstance(feedback, Direct):
            y, carrier_tensor = LinearDirect.apply(x, weight, bias, feedback.D, carrier)
            feedback.sink(carrier_tensor)
            return y
        if feedback is not None and rows is not None:
            feedback = feedback[rows]
        return LinearFeedback.apply(x, weight, bias, feedback)

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
