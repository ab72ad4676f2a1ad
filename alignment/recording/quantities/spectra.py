"""weight_sv, feedback_sv, feedback_target_sv (family ``spectra``, opt-in, probe schedule).

Singular values (descending, float64, :func:`singular_values`) of W reshaped to
out × (in·kh·kw), of the effective feedback ``feedback_matrix()`` reshaped the same way (FA, KP:
B; PFA: B·R; sign symmetry: its sign matrix; BP: W itself; DFA: D, C × (in·kh·kw)), and for PFA
and PFA-o of B·(M⊙BᵀW): the feedback at the weight-decay fixed point R* = M⊙BᵀW towards which
R's update Bᵀ·grad_W and the decay drive R (arXiv 2405.20594, §3; M is R's sparsity mask, all
ones when dense), so that the spectrum of B·R can be compared with its target's. Each keeps its
largest ``max_rank`` (``Recorder(max_rank=...)``, default 256) values, NaN-padded on the shared
``rank`` dim to the
widest layer; feedback_target_sv is NaN for layers under other rules. Fixed feedback (FA's B,
DFA's D) has one spectrum per run, computed at the first record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from alignment.recording.quantities.common import Quantity, stack_rows
from alignment.rules import BP, DFA, FA, PFA
from alignment.rules.base import masked

if TYPE_CHECKING:
    from alignment.layers.base import FeedbackLayer
    from alignment.recording.context import Network, StepContext


def matrix(t: Tensor) -> Tensor:
    """``t`` as a float64 matrix: its first dim × the rest."""
    return t.detach().reshape(t.shape[0], -1).to(torch.float64)


def singular_values(t: Tensor, limit: int) -> np.ndarray:
    """The ``limit`` largest singular values of ``t`` as a matrix (:func:`matrix`), descending:
    square roots of the eigenvalues of its smaller Gram matrix, in float64 (2–3× faster than an
    SVD on CPU; absolute error about 1e-8 of the largest singular value)."""
    m = matrix(t)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    values = torch.linalg.eigvalsh(gram).flip(0)[:limit]
    return values.clamp_min(0.0).sqrt().cpu().numpy()


def fixed_feedback(layer: FeedbackLayer) -> bool:
    """Whether the layer's feedback never changes in training (FA's B, DFA's D): its spectrum is
    computed once per recorder."""
    return isinstance(layer.rule, DFA) or (type(layer.rule) is FA)


def target(layer: FeedbackLayer, cache: dict) -> Tensor:
    """B·(M⊙BᵀW) of a PFA layer as an out × (in·kh·kw) float64 matrix; (B·Bᵀ) is cached (B is
    fixed) and used as (B·Bᵀ)·W when R has no mask."""
    w = matrix(layer.weight)
    b = masked(layer, "B").detach().to(torch.float64)
    mask = getattr(layer, "R_mask", None)
    if mask is None:
        key = ("B·Bᵀ", id(layer))
        if key not in cache:
            cache[key] = b @ b.T
        return cache[key] @ w
    return b @ (matrix(mask) * (b.T @ w))


def rank_width(net: Network) -> int:
    """Length of the ``rank`` dim: the most singular values any layer's matrices have (capped)."""
    sizes = []
    for name, layer in net.layers.items():
        w = layer.weight
        sizes.append(min(w.shape[0], w[0].numel()))
        if name in net.dfa:
            d = layer.feedback_matrix()
            sizes.append(min(d.shape[0], d[0].numel()))
    return min(max(sizes), net.max_rank)


class Spectra(Quantity):
    variables = ("weight_sv", "feedback_sv", "feedback_target_sv")
    when = "jacobian"

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        net, limit = ctx.net, ctx.net.max_rank
        weight, feedback, targets = {}, {}, {}
        for name, layer in net.layers.items():
            weight[name] = singular_values(layer.weight, limit)
            if isinstance(layer.rule, BP):
                feedback[name] = weight[name]  # BP's feedback is W
            elif fixed_feedback(layer):
                key = ("feedback_sv", name, limit)
                if key not in net.cache:
                    net.cache[key] = singular_values(ctx.feedback_matrices[name], limit)
                feedback[name] = net.cache[key]
            else:
                feedback[name] = singular_values(ctx.feedback_matrices[name], limit)
            if isinstance(layer.rule, PFA):
                targets[name] = singular_values(target(layer, net.cache), limit)
        width = rank_width(net)
        return {
            "weight_sv": stack_rows(net, weight, width),
            "feedback_sv": stack_rows(net, feedback, width),
            "feedback_target_sv": stack_rows(net, targets, width),
        }


QUANTITY = Spectra()
