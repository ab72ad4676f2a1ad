"""grad_snr and sample_grad_angle (family ``gradient_noise``, opt-in, probe schedule), for every
rule.

From the rule's per-sample updates gᵢ of W on the probe batch (:mod:`alignment.recording.
per_sample`: ``torch.func.vmap`` of the gradient through the rule's own backward, eval mode):

* grad_snr = ‖ḡ‖² / ((1/(n−1)) Σᵢ ‖gᵢ − ḡ‖²), ḡ the mean of the gᵢ: how much of the update is
  shared by the samples against how much each sample adds of its own (NaN when n < 2 or the
  spread is 0);
* sample_grad_angle[i]: angle between gᵢ and BP's gradient of W on the whole probe batch (eval
  mode; the mean of BP's per-sample gradients), in degrees.

The samples are processed in chunks whose updates fit in
:data:`~alignment.recording.per_sample.CHUNK_BYTES`; the spread is accumulated over the chunks
with the pairwise update of Chan et al. (exact, no cancellation of Σ‖gᵢ‖² − n‖ḡ‖²). The sums run
in the model's dtype (torch's cascade summation), the combination across chunks in float64.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from alignment.recording.per_sample import chunk_size, per_sample_updates
from alignment.recording.quantities.common import NAN, Quantity, per_layer, stack_rows

if TYPE_CHECKING:
    from alignment.recording.context import StepContext


class Spread:
    """Running mean and Σᵢ‖gᵢ − ḡ‖² of flattened updates, fed in chunks.

    Each chunk is centred on its own mean before squaring (no cancellation of Σ‖gᵢ‖² − n‖ḡ‖²),
    in the updates' dtype with torch's cascade summation; the chunks are combined in float64.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2 = 0.0

    def add(self, chunk: Tensor, scratch: Tensor) -> None:
        """Add the rows of ``chunk`` (samples × numel); ``scratch``: a buffer of its shape."""
        count = chunk.shape[0]
        mean = chunk.mean(0)
        m2 = float(torch.sub(chunk, mean, out=scratch).square_().sum())
        mean = mean.to(torch.float64)
        if self.mean is None:
            self.n, self.mean, self.m2 = count, mean, m2
            return
        total = self.n + count
        delta = mean - self.mean
        self.m2 += m2 + float(delta.square().sum()) * self.n * count / total
        self.mean = self.mean + delta * (count / total)
        self.n = total

    def snr(self) -> float:
        """‖ḡ‖² / (Σ‖gᵢ − ḡ‖² / (n − 1)); NaN when undefined."""
        if self.mean is None or self.n < 2 or not self.m2 > 0.0:
            return NAN
        return float(self.mean.square().sum()) / (self.m2 / (self.n - 1))


def angles_to(chunk: Tensor, reference: Tensor | None, scratch: Tensor) -> np.ndarray:
    """Angle in degrees between each row of ``chunk`` and ``reference``, by
    :func:`alignment.metrics.angle`'s 2·atan2(‖â − b̂‖, ‖â + b̂‖) (accurate at small angles);
    NaN for zero vectors, all NaN without a reference. ``scratch``: a buffer of chunk's shape."""
    if reference is None:
        return np.full(chunk.shape[0], NAN)
    ref = reference.reshape(-1).to(chunk.dtype)
    ref_norm = torch.linalg.vector_norm(ref)
    if float(ref_norm) == 0.0:
        return np.full(chunk.shape[0], NAN)
    unit_ref = ref / ref_norm
    norms = torch.linalg.vector_norm(chunk, dim=1)
    unit = torch.div(chunk, torch.where(norms > 0, norms, 1.0)[:, None], out=scratch)
    summ = torch.linalg.vector_norm(unit + unit_ref, dim=1)
    diff = torch.linalg.vector_norm(unit.sub_(unit_ref), dim=1)
    theta = 2.0 * torch.atan2(diff, summ).to(torch.float64) * (180.0 / math.pi)
    return torch.where(norms > 0, theta, NAN).cpu().numpy()


class GradientNoise(Quantity):
    variables = ("grad_snr", "sample_grad_angle")
    when = "jacobian"

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        net = ctx.net
        x, y = ctx.x_probe, ctx.y_probe
        n = x.shape[0]
        bp = ctx.probe_bp_grads
        spreads: dict[str, Spread] = {}
        angles: dict[str, list[np.ndarray]] = {}
        step = chunk_size(net, n)
        for start in range(0, n, step):
            chunk = slice(start, start + step)
            updates = per_sample_updates(net, x[chunk], y[chunk], ctx.loss_fn)
            for name, g in updates.items():
                flat = g.reshape(g.shape[0], -1)
                # reused between records: a fresh buffer this large costs page faults on CPU
                scratch = net.workspace.buffer("per_sample", flat.shape, flat.dtype, flat.device)
                spreads.setdefault(name, Spread()).add(flat, scratch)
                angles.setdefault(name, []).append(angles_to(flat, bp[name], scratch))
        return {
            "grad_snr": per_layer(net, {name: s.snr() for name, s in spreads.items()}),
            "sample_grad_angle": stack_rows(
                net, {name: np.concatenate(rows) for name, rows in angles.items()}, n
            ),
        }


QUANTITY = GradientNoise()
