"""grad_alignment (deg), grad_norm and grad_bp_norm, per layer.

The rule's update for W (its gradient, before the optimizer) against the true BP gradient of the
same loss, at the same weights, on the same training batch, in the model's own mode (BatchNorm on
batch statistics and dropout with the same masks as the training step that follows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from alignment.recording.quantities.common import Quantity, compare, per_layer

if TYPE_CHECKING:
    from alignment.recording.context import StepContext


class Gradients(Quantity):
    variables = ("grad_alignment", "grad_norm", "grad_bp_norm")

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        net, rule, bp = ctx.net, ctx.train_rule.grads, ctx.train_bp.grads
        angles, norms, bp_norms = {}, {}, {}
        for name in net.names:
            angles[name], _, norms[name], bp_norms[name] = compare(
                rule[name], bp[name], net.workspace
            )
        return {
            "grad_alignment": per_layer(net, angles),
            "grad_norm": per_layer(net, norms),
            "grad_bp_norm": per_layer(net, bp_norms),
        }


QUANTITY = Gradients()
