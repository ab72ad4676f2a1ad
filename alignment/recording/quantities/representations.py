"""activation (family ``representations``, opt-in, probe schedule): each layer's output on the
probe batch, pooled to one vector of units per sample.

Taken from the rule's eval-mode probe pass (:attr:`~alignment.recording.context.StepContext.
probe_rule`, the pass ``delta_alignment`` already makes), by a forward hook on each converted
layer: its output y, before any following nonlinearity (the same y under every rule, as the
forward is the same). Pooled by a mean over every dim but the sample and the feature dim: conv
layers (sample × C × H × W) over H × W, outputs of shape (sample, …, F) over the middle positions.
A layer wider than ``max_features`` (``Recorder(max_features=...)``, default 256) keeps the units
⌊i·F/m⌋, i = 0 … m−1: a fixed, evenly spaced subset, the same at every record. NaN-padded on the
``unit`` dim to the widest (capped) layer. What analyses compute from it: linear CKA between runs
and across layers, effective rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from alignment.recording.quantities.common import Quantity

if TYPE_CHECKING:
    from alignment.recording.context import Network, StepContext


def pooled(output: Tensor, conv: bool) -> Tensor:
    """sample × F: the mean over every dim but the sample and the feature dim (conv: dim 1)."""
    if conv:
        return output.mean(dim=tuple(range(2, output.dim()))) if output.dim() > 2 else output
    return output.mean(dim=tuple(range(1, output.dim() - 1))) if output.dim() > 2 else output


def kept_units(width: int, cap: int) -> Tensor:
    """Indices of the units kept of a layer ``width`` wide: all, or ⌊i·width/cap⌋ for i < cap."""
    if width <= cap:
        return torch.arange(width)
    return torch.div(torch.arange(cap) * width, cap, rounding_mode="floor")


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d)


def widths(net: Network) -> dict[str, int]:
    """Units each layer records (after the cap)."""
    out = {}
    for name, module in net.layers.items():
        shape = net.out_shapes[name]
        width = (shape[0] if _is_conv(module) else shape[-1]) if shape else 1
        out[name] = min(width, net.max_features)
    return out


class Representations(Quantity):
    variables = ("activation",)
    when = "jacobian"

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        net = ctx.net
        outputs = ctx.probe_rule.outputs
        n = ctx.x_probe.shape[0]
        sizes = widths(net)
        values = np.full((len(net.names), n, max(sizes.values())), np.nan)
        for i, (name, module) in enumerate(net.layers.items()):
            y = outputs[name]
            y = y.reshape(n, 1) if y.dim() == 1 else y
            features = pooled(y, _is_conv(module))
            keep = kept_units(features.shape[1], net.max_features).to(features.device)
            values[i, :, : sizes[name]] = features[:, keep].to(torch.float64).cpu().numpy()
        return {"activation": values}


QUANTITY = Representations()
