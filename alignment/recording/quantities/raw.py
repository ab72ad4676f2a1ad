"""Raw tensors, opt-in per layer: ``update``, ``grad_bp``, ``feedback``, ``jacobian_true``,
``jacobian_fb``, one variable ``<quantity>__<layer>`` per layer with that layer's own dims.

* ``update__<l>`` / ``grad_bp__<l>``: grad_W under the rule / under BP on the recorded batch;
* ``feedback__<l>``: ``feedback_matrix()`` (PFA: B·R; DFA: D, C × input);
* ``jacobian_true__<l>`` / ``jacobian_fb__<l>``: per probe sample, logits w.r.t. the layer output.

Weight-shaped dims are ``<l>__out``, ``<l>__in``, then the kernel dims (Conv1d: ``<l>__kl``;
Conv2d: ``<l>__kh``, ``<l>__kw``; Conv3d: ``<l>__kd``, ``<l>__kh``, ``<l>__kw``); output dims
``<l>__out`` then the grid (Conv1d: ``<l>__length``; Conv2d: ``<l>__height``, ``<l>__width``;
Conv3d: ``<l>__depth``, ``<l>__height``, ``<l>__width``); extra middle dims of a linear layer's
output (sequence positions, e.g. tokens) come first as ``<l>__pos0``, …. Stored in the model's
dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor, nn

from alignment.recording.schema import RAW_QUANTITIES, raw_name

if TYPE_CHECKING:
    from alignment.recording.context import StepContext

QUANTITIES = tuple(RAW_QUANTITIES)
JACOBIANS = ("jacobian_true", "jacobian_fb")


KERNEL_DIMS = {0: (), 1: ("kl",), 2: ("kh", "kw"), 3: ("kd", "kh", "kw")}
GRID_DIMS = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def weight_dims(layer: str, ndim: int) -> tuple[str, ...]:
    return tuple(f"{layer}__{d}" for d in ("out", "in", *KERNEL_DIMS[ndim - 2]))


def output_dims(layer: str, module: nn.Module, ndim: int) -> tuple[str, ...]:
    if isinstance(module, nn.modules.conv._ConvNd):
        return tuple(f"{layer}__{d}" for d in ("out", *GRID_DIMS[ndim - 1]))
    return (*(f"{layer}__pos{i}" for i in range(ndim - 1)), f"{layer}__out")


def _numpy(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy()


def compute(
    ctx: StepContext, layers: tuple[str, ...]
) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """{variable: (dims without raw_step, values)} for every raw quantity of ``layers``."""
    out: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    net = ctx.net
    for name in layers:
        module = net.layers[name]
        w_dims = weight_dims(name, module.weight.dim())
        grads = {"update": ctx.train_rule.grads[name], "grad_bp": ctx.train_bp.grads[name]}
        for quantity, grad in grads.items():
            if grad is not None:
                out[raw_name(quantity, name)] = (w_dims, _numpy(grad))
        fb = ctx.feedback_matrices[name]
        fb_dims = w_dims if name not in net.dfa else ("logit", *w_dims[1:])
        out[raw_name("feedback", name)] = (fb_dims, _numpy(fb))
        jac_dims = ("sample", "logit", *output_dims(name, module, len(net.out_shapes[name])))
        jac = ctx.jacobians
        out[raw_name("jacobian_true", name)] = (jac_dims, _numpy(jac.true[name]))
        out[raw_name("jacobian_fb", name)] = (jac_dims, _numpy(jac.fb[name]))
    return out
