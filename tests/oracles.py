"""Independent oracles for every rule's backward: explicit matrix formulas (im2col for conv).

Nothing here calls the engine's autograd Functions or ``aten.convolution_backward``: the
convolution (1, 2 or 3 spatial dims) is written as a matrix product over im2col columns gathered
by strided slices of the padded input, one kernel offset at a time; e_in = Fᵀδ is scattered back
by the same slices (col2im) and grad_W = δ·colsᵀ is a plain matmul.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

import alignment
from alignment.layers import ConvLayer


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


def _pads(layer: ConvLayer) -> tuple[tuple[int, int], ...]:
    return layer.geometry.explicit_padding(tuple(layer.kernel_size))


def _windows(layer: ConvLayer, in_size: tuple[int, ...]):
    """For every kernel offset, the strided slices of the padded input it reads, per dim."""
    pads = _pads(layer)
    padded = [n + lo + hi for n, (lo, hi) in zip(in_size, pads, strict=True)]
    out = [
        (p - d * (k - 1) - 1) // s + 1
        for p, k, d, s in zip(padded, layer.kernel_size, layer.dilation, layer.stride, strict=True)
    ]
    for offset in itertools.product(*(range(k) for k in layer.kernel_size)):
        yield tuple(
            slice(o * d, o * d + s * (n - 1) + 1, s)
            for o, d, s, n in zip(offset, layer.dilation, layer.stride, out, strict=True)
        )


def im2col(layer: ConvLayer, x: Tensor) -> Tensor:
    """Columns (N, C_in·∏k, L) of the padded input: column l holds the input patch that output
    position l reads, in the channel-major, kernel-offset-minor order of W.flatten(1)."""
    pads = _pads(layer)
    xp = F.pad(x, [p for pair in reversed(pads) for p in pair])
    patches = [xp[(..., *window)] for window in _windows(layer, tuple(x.shape[2:]))]
    cols = torch.stack(patches, 2)  # N, C, K, *out
    return cols.reshape(x.shape[0], -1, cols[0, 0, 0].numel())


def col2im(layer: ConvLayer, cols: Tensor, x_shape: torch.Size) -> Tensor:
    """The adjoint of :func:`im2col`: every column entry added back where it was read."""
    pads = _pads(layer)
    padded = [n + lo + hi for n, (lo, hi) in zip(x_shape[2:], pads, strict=True)]
    out = torch.zeros(*x_shape[:2], *padded, dtype=cols.dtype)
    windows = list(_windows(layer, tuple(x_shape[2:])))
    per_offset = cols.reshape(x_shape[0], x_shape[1], len(windows), -1)
    for i, window in enumerate(windows):
        target = out[(..., *window)]
        target += per_offset[:, :, i].reshape(target.shape)
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, x_shape[2:], strict=True))
    return out[(..., *crop)]


def conv_grads(
    layer: ConvLayer, x: Tensor, delta: Tensor, feedback: Tensor, groups: int
) -> tuple[Tensor, Tensor]:
    """(e_in, grad_W) of a grouped conv by explicit matrices: e_in = fold(Fᵀδ), grad_W = δ colsᵀ."""
    n, c_in = x.shape[:2]
    kernel = math.prod(layer.kernel_size)
    cols = im2col(layer, x).reshape(n, groups, c_in // groups * kernel, -1)
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
    conv = isinstance(layer, ConvLayer)
    out: dict[str, Tensor] = {}
    if conv:
        groups = 1 if layer.rule.name == "dfa" else layer.groups
        if layer.rule.name == "dfa":
            grid = delta.shape[2:]
            tiled = delta.reshape(*delta.shape[:2], *(1,) * len(grid)).expand(-1, -1, *grid)
            out["e_in"], _ = conv_grads(layer, x, tiled, fb, 1)
            _, out["grad_W"] = conv_grads(layer, x, delta, layer.weight.detach(), layer.groups)
        else:
            out["e_in"], out["grad_W"] = conv_grads(layer, x, delta, fb, groups)
        out["grad_b"] = delta.sum((0, *range(2, delta.dim())))
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
