"""feedback_residual and feedback_residual_rel, per layer (PFA, PFA-o and Kolen–Pollack only),
and the network-level feedback_residual_predicted.

PFA: ‖R − BᵀW‖ and ‖R − BᵀW‖/‖BᵀW‖ (conv: (BᵀW)[m] = Σ_o B[o,m] W[o]), the distance from the
fixed point R* = BᵀW that weight decay contracts (alignment.theory, property 1).
Kolen–Pollack: ‖B − W‖ and ‖B − W‖/‖W‖. B and R with their sparsity masks applied, as the
backward uses them. NaN for layers under other rules. feedback_residual_predicted: the factor
c_t by which SGD with coupled L2 has shrunk R − BᵀW (KP: B − W) since the reference step, tracked
by the recorder at every optimizer step (:mod:`alignment.recording.decay`); NaN where that
identity does not hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from alignment.layers.base import FeedbackLayer
from alignment.recording.quantities.common import NAN, Quantity, Workspace, per_layer
from alignment.rules import KP, PFA
from alignment.rules.base import masked

if TYPE_CHECKING:
    from alignment.recording.context import Network, StepContext


def residual(layer: FeedbackLayer, workspace: Workspace | None = None) -> tuple[float, float]:
    """(‖R − BᵀW‖, ‖BᵀW‖) for PFA, (‖B − W‖, ‖W‖) for KP, NaN otherwise (norms in float64)."""
    workspace = Workspace() if workspace is None else workspace
    w = layer.weight.detach()
    if isinstance(layer.rule, PFA):
        b, r = masked(layer, "B").detach(), masked(layer, "R").detach()
        target = workspace.buffer("BtW", (b.shape[1], w[0].numel()), w.dtype, w.device)
        torch.mm(b.T, w.reshape(w.shape[0], -1), out=target)
        source = r
    elif isinstance(layer.rule, KP):
        source, target = masked(layer, "B").detach(), w
    else:
        return NAN, NAN
    ua, ub, tmp = workspace.float64(target.numel(), target.device)
    ua.copy_(source.reshape(-1))
    ub.copy_(target.reshape(-1))
    difference = float(torch.linalg.vector_norm(torch.sub(ua, ub, out=tmp)))
    return difference, float(torch.linalg.vector_norm(ub))


def applies_to(layer: FeedbackLayer) -> bool:
    return isinstance(layer.rule, PFA | KP)


class FeedbackResidual(Quantity):
    variables = ("feedback_residual", "feedback_residual_rel", "feedback_residual_predicted")

    def applies(self, net: Network) -> bool:
        return any(applies_to(layer) for layer in net.layers.values())

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        absolute, relative = {}, {}
        for name, layer in ctx.net.layers.items():
            if applies_to(layer):
                absolute[name], reference = residual(layer, ctx.net.workspace)
                relative[name] = absolute[name] / reference if reference > 0 else NAN
        return {
            "feedback_residual": per_layer(ctx.net, absolute),
            "feedback_residual_rel": per_layer(ctx.net, relative),
            "feedback_residual_predicted": np.float64(ctx.residual_factor),
        }


QUANTITY = FeedbackResidual()
