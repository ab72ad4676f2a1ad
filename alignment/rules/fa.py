"""Feedback alignment (Lillicrap et al. 2016): e_in = δ B with a fixed random B."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from alignment.rules.base import (
    INITS,
    Rule,
    add_feedback,
    add_mask,
    check_choice,
    check_density,
    masked,
    new_tensor,
)


@dataclass(frozen=True)
class FA(Rule):
    """e_in = δ (B∘M); B fixed, W's shape, Xavier-uniform like W; M a Bernoulli(ρ) mask if ρ < 1."""

    name = "fa"
    label = "FA"
    color = "C1"
    alignment_kind = "weight"
    equation = "e_in = δ B"
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
        return masked(layer, "B")
