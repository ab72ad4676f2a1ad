"""jacobian_alignment (deg, per probe sample), jacobian_sv_true and jacobian_sv_fb (sv dim).

On the fixed probe batch in eval mode, per sample n and layer l: the true Jacobian
J[n] = ∂logits[n]/∂y_l[n] (the BP copy at the live weights) and the feedback Jacobian, the map the
rule actually uses to send output errors to y_l (``torch.func.jacrev`` through the live converted
model, whose backward *is* the rule). Both are C × (output size) matrices, from one vmapped
backward per model for all layers at once. Recorded: their angle per sample, and the singular
values of each (descending, min(C, output size) of them), averaged over the probe samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from alignment.recording.quantities.common import Quantity, safe_angle_rows, stack_rows

if TYPE_CHECKING:
    from alignment.recording.context import StepContext


def singular_values(jac: Tensor) -> np.ndarray:
    """Probe-mean of the per-sample singular values (descending) of N × C × (output dims)
    Jacobians, from the eigenvalues of the smaller Gram matrix in float64 (accurate to about
    1e-8 of the largest singular value, and far cheaper than an SVD of C × 16384 matrices)."""
    matrices = jac.reshape(jac.shape[0], jac.shape[1], -1).to(torch.float64)
    if matrices.shape[1] <= matrices.shape[2]:
        gram = matrices @ matrices.mT
    else:
        gram = matrices.mT @ matrices
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt().flip(-1)
    return eig.mean(0).cpu().numpy()


class Jacobians(Quantity):
    variables = ("jacobian_alignment", "jacobian_sv_true", "jacobian_sv_fb")
    when = "jacobian"

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        net, jac = ctx.net, ctx.jacobians
        angles = {name: safe_angle_rows(jac.fb[name], jac.true[name]) for name in net.names}
        sv_true = {name: singular_values(jac.true[name]) for name in net.names}
        sv_fb = {name: singular_values(jac.fb[name]) for name in net.names}
        return {
            "jacobian_alignment": stack_rows(net, angles, ctx.x_probe.shape[0]),
            "jacobian_sv_true": stack_rows(net, sv_true, net.num_outputs),
            "jacobian_sv_fb": stack_rows(net, sv_fb, net.num_outputs),
        }


QUANTITY = Jacobians()
