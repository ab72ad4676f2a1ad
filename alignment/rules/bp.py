"""Backpropagation: e_in = δ W (the reference every other rule is measured against)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from alignment.rules.base import Rule


@dataclass(frozen=True)
class BP(Rule):
    """e_in = δ W; grad_W = δᵀ x. Exactly torch autograd (Rumelhart et al. 1986), so a BP layer
    runs the plain torch op and its backward is autograd's own."""

    name = "bp"
    label = "BP"
    color = "C0"
    alignment_kind = ""
    equation = "e_in = δ W"
    native_backward = True

    def feedback(self, layer, x: Tensor | None = None) -> Tensor:
        return layer.weight.detach()
