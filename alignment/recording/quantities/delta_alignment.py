"""delta_alignment (deg, per probe sample): the error δ = ∂L/∂y the rule delivers to each layer
output against the one BP would deliver, on the fixed probe batch in eval mode.

Computed directly: one rule pass and one BP pass over the probe, each with a zero perturbation on
every layer output whose gradient is δ. (Equivalently δ[n] = e_out[n]·J[n] with the Jacobians of
:mod:`~alignment.recording.quantities.jacobians`; the tests check the two agree.) Recorded on
the probe schedule (``Recorder(jacobian_schedule=...)``), like the Jacobians: its two probe
passes would cost about a training step at every record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from alignment.recording.quantities.common import Quantity, safe_angle_rows, stack_rows

if TYPE_CHECKING:
    from alignment.recording.context import StepContext


class DeltaAlignment(Quantity):
    variables = ("delta_alignment",)
    when = "jacobian"  # per probe sample: on the probe schedule

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        rule, bp = ctx.probe_rule.deltas, ctx.probe_bp.deltas
        rows = {name: safe_angle_rows(rule[name], bp[name]) for name in ctx.net.names}
        return {"delta_alignment": stack_rows(ctx.net, rows, ctx.x_probe.shape[0])}


QUANTITY = DeltaAlignment()
