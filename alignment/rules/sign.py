"""Sign-symmetry rules (Liao et al. 2016; Moskovitz et al. 2018; Xiao et al. 2018).

The feedback has W's signs and some other magnitude:
uSF: s·sign(W) with s the layer's Xavier std; frSF: |B|∘sign(W) with a fixed random B;
brSF: |B_t|∘sign(W) with B_t redrawn at every forward (batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignment.rules.base import (
    INITS,
    Rule,
    add_feedback,
    add_mask,
    check_choice,
    check_density,
    init_tensor,
    masked,
    new_tensor,
    xavier_std,
)


@dataclass(frozen=True)
class USF(Rule):
    """uSF: e_in = δ (s·sign(W) ∘ M), s = sqrt(2/(fan_in+fan_out)), recomputed every forward."""

    name = "usf"
    label = "uSF"
    color = "C4"
    alignment_kind = "weight"
    equation = "e_in = δ (s·sign W)"
    density: float = 1.0

    def validate(self) -> None:
        check_density(self.name, self.density)

    def create_feedback(self, layer) -> None:
        if self.density < 1.0:
            mask = torch.bernoulli(torch.full_like(layer.weight, self.density, requires_grad=False))
            layer.register_buffer("feedback_mask", mask)

    def feedback(self, layer, x: Tensor | None = None) -> Tensor:
        w = layer.weight.detach()
        feedback = torch.sign(w).mul_(xavier_std(w))
        mask = getattr(layer, "feedback_mask", None)
        return feedback if mask is None else feedback.mul_(mask)


@dataclass(frozen=True)
class FRSF(Rule):
    """frSF: e_in = δ (|B|∘sign(W) ∘ M) with B fixed random (Xavier-uniform like W)."""

    name = "frsf"
    label = "frSF"
    color = "C7"
    alignment_kind = "weight"
    equation = "e_in = δ (|B|∘sign W)"
    density: float = 1.0
    init: str = "xavier"

    def validate(self) -> None:
        check_density(self.name, self.density)
        check_choice(self.name, "init", self.init, INITS)

    def create_feedback(self, layer) -> None:
        add_feedback(
            layer, "B", new_tensor(layer, tuple(layer.weight.shape), self.init), learned=False
        )
        add_mask(layer, "B", self.density)

    def feedback(self, layer, x: Tensor | None = None) -> Tensor:
        return torch.sign(layer.weight.detach()).mul_(masked(layer, "B").abs())


@dataclass(frozen=True)
class BRSF(FRSF):
    """brSF: e_in = δ (|B_t|∘sign(W) ∘ M) with B_t redrawn (Xavier-uniform) at every forward.

    ``B`` holds the draw of the most recent forward, so ``feedback_matrix()`` is the matrix that
    the most recent backward used.
    """

    name = "brsf"
    label = "brSF"
    color = "C8"
    alignment_kind = "weight"
    equation = "e_in = δ (|B_t|∘sign W), B_t new each batch"

    def feedback(self, layer, x: Tensor | None = None) -> Tensor:
        if x is not None:  # a fresh tensor, not an in-place redraw, so torch.func can trace it
            layer.B = init_tensor(torch.empty_like(layer.B), self.init)
        return super().feedback(layer, x)
