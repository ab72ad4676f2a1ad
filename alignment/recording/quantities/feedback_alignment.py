"""feedback_alignment (deg) and feedback_norm_ratio, per layer.

angle(feedback_matrix(), W) and ‖feedback_matrix()‖/‖W‖: the paper's weight alignment (FA, sign
symmetry, KP) and path alignment angle(B·R, W) (PFA, PFA-o). BP reads exactly 0° and 1.

DFA's D (C × input) has no W to compare with. Its counterpart is the true map from the output
error to the layer *input*: the feedback map e_out ↦ e_in the rule uses (for a linear layer this
is exactly D; for a conv layer the transposed convolution of the tiled e_out with D) is compared
with the true Jacobian of the logits w.r.t. the layer input, averaged over the probe batch.
That mean Jacobian takes C vector-Jacobian products over the probe (several training steps), so
DFA layers are measured on the probe schedule (``Recorder(jacobian_schedule=...)``) and are NaN
at the other records; every other rule's layers at every record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from alignment.recording.quantities.common import Quantity, compare, per_layer

if TYPE_CHECKING:
    from alignment.recording.context import StepContext


class FeedbackAlignment(Quantity):
    variables = ("feedback_alignment", "feedback_norm_ratio")

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        net = ctx.net
        angles, ratios = {}, {}
        dfa = set(net.dfa)
        maps = ctx.dfa_maps if dfa and ctx.probe_record else None
        for name, layer in net.layers.items():
            if name in dfa:
                if not ctx.probe_record:
                    continue  # NaN: the probe-mean Jacobian is a probe-schedule quantity
                fb, true = maps.fb[name], maps.true[name]
            else:
                fb, true = ctx.feedback_matrices[name], layer.weight.detach()
            angles[name], ratios[name], _, _ = compare(fb, true, net.workspace)
        return {
            "feedback_alignment": per_layer(net, angles),
            "feedback_norm_ratio": per_layer(net, ratios),
        }


QUANTITY = FeedbackAlignment()
