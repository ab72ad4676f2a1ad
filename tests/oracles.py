"""Independent oracles for every rule's backward: explicit matrix formulas (im2col for conv).

Nothing here calls the engine's autograd Functions or ``aten.convolution_backward``: the
convolution is written as a matrix product over ``F.unfold`` columns, so e_in = Fᵀδ is folded back
with ``F.fold`` and grad_W = δ·colsᵀ is a plain matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

import alignment


def explicit_feedback(layer: alignment.FeedbackLayer) -> Tensor:
    """The feedback each rule's equation prescribes, rebuilt from the layer's raw tensors."""
    name, w = layer.rule.name, layer.weight.detach()

    def mask(tensor_name: str) -> Tensor:
        m = getattr(layer, f"{tensor_name}_mask", None)
        return torch.ones(()) if m is None else m

    if name == "bp":
        return w
    if name in ("fa", "kp"):
        return layer.B.detach() * mask("B")
    if name == "usf":
        fan_in = w[0].numel()
        fan_out = w.shape[0] * w[0, 0].numel()
        return torch.sign(w) * (2.0 / (fan_in + fan_out)) ** 0.5 * mask("feedback")
    if name in ("frsf", "brsf"):
        return (layer.B.detach() * mask("B")).abs() * torch.sign(w)
    if name in ("pfa", "pfa_o"):
        B, R = layer.B.detach() * mask("B"), layer.R.detach() * mask("R")
        return (B @ R.flatten(1)).reshape(w.shape)
    if name == "dfa":
        return layer.D.detach() * mask("D")
    raise KeyError(name)


def _pads(layer: alignment.Conv2d) -> tuple[int, int, int, int]:
    return layer.geometry.explicit_padding(tuple(layer.kernel_size))


def im2col(layer: alignment.Conv2d, x: Tensor) -> Tensor:
    """Columns (N, C_in·kh·kw, L) of the padded input."""
    top, bottom, left, right = _pads(layer)
    xp = F.pad(x, (left, right, top, bottom))
    return F.unfold(xp, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)


def col2im(layer: alignment.Conv2d, cols: Tensor, x_shape: torch.Size) -> Tensor:
    top, bottom, left, right = _pads(layer)
    size = (x_shape[-2] + top + bottom, x_shape[-1] + left + right)
    folded = F.fold(cols, size, layer.kernel_size, dilation=layer.dilation, stride=layer.stride)
    return folded[..., top : top + x_shape[-2], left : left + x_shape[-1]]


def conv_grads(
    layer: alignment.Conv2d, x: Tensor, delta: Tensor, feedback: Tensor, groups: int
) -> tuple[Tensor, Tensor]:
    """(e_in, grad_W) of a grouped conv by explicit matrices: e_in = fold(Fᵀδ), grad_W = δ colsᵀ."""
    n, c_in = x.shape[:2]
    cols = im2col(layer, x).reshape(
        n, groups, c_in // groups * layer.kernel_size[0] * layer.kernel_size[1], -1
    )
    d = delta.flatten(2).reshape(n, groups, delta.shape[1] // groups, -1)
    f = feedback.reshape(groups, feedback.shape[0] // groups, -1)
    e_cols = torch.einsum("gok,ngol->ngkl", f, d).reshape(n, -1, cols.shape[-1])
    e_in = col2im(layer, e_cols, x.shape)
    grad_w = torch.einsum("ngol,ngkl->gok", d, cols).reshape(feedback.shape)
    return e_in, grad_w


def expected_grads(layer: alignment.FeedbackLayer, x: Tensor, delta: Tensor) -> dict[str, Tensor]:
    """e_in, grad_W, grad_b and the learned feedback's gradient, from the rule's equations.

    For DFA ``delta`` is e_out and the layer is its own network output (a bare converted layer).
    """
    fb = explicit_feedback(layer)
    conv = isinstance(layer, alignment.Conv2d)
    out: dict[str, Tensor] = {}
    if conv:
        groups = 1 if layer.rule.name == "dfa" else layer.groups
        if layer.rule.name == "dfa":
            tiled = delta.reshape(*delta.shape[:2], 1, 1).expand(-1, -1, *delta.shape[2:])
            out["e_in"], _ = conv_grads(layer, x, tiled, fb, 1)
            _, out["grad_W"] = conv_grads(layer, x, delta, layer.weight.detach(), layer.groups)
        else:
            out["e_in"], out["grad_W"] = conv_grads(layer, x, delta, fb, groups)
        out["grad_b"] = delta.sum((0, 2, 3))
    else:
        out["e_in"] = delta @ fb
        out["grad_W"] = delta.T @ x
        out["grad_b"] = delta.sum(0)
    name = layer.rule.name
    if name in ("pfa", "pfa_o"):
        B = layer.B * getattr(layer, "B_mask", 1.0)
        grad_r = (B.T @ out["grad_W"].flatten(1)).reshape(layer.R.shape)
        out["grad_R"] = grad_r * getattr(layer, "R_mask", 1.0)
    if name == "kp":
        out["grad_B"] = out["grad_W"] * getattr(layer, "B_mask", torch.ones(()))
    return out
