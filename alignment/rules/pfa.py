"""Product feedback alignment (Li & Benna, arXiv 2405.20594): e_in = (δ B) R.

B (N_out × N_mid, N_mid = k·N_out) is fixed; R (N_mid × N_in, conv: N_mid × C_in/g × kh × kw) is
learned with the local rule grad_R = (δB)ᵀx = Bᵀ grad_W. The forward never touches B or R.

The training path uses associativity: e_in = δ (B·R) with the effective feedback B·R built by
autograd, so the chain rule delivers exactly grad_R = Bᵀ grad_W. For a linear layer it switches
to the two-stage order (δB)R when the batch is small enough for that to be cheaper (same
mathematics, fewer FLOPs); ``path="two_stage"`` forces the explicit feedback-neuron computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from alignment.rules.base import (
    INITS,
    Rule,
    TwoStage,
    add_feedback,
    add_mask,
    check_choice,
    check_density,
    masked,
    new_tensor,
)

B_INITS = ("random", "orthogonal", "identity")
PATHS = ("auto", "product", "two_stage")


def b_gain(k: int, density: float) -> float:
    """Xavier gain sqrt((1+1/k)/2/ρ): Var(B_ij) = 1/(ρ N_mid), hence E[B Bᵀ] = I."""
    return math.sqrt((1.0 + 1.0 / k) / 2.0 / density)


def make_b(n_out: int, k: int, groups: int, b_init: str, density: float, like: Tensor) -> Tensor:
    """B, N_out × k·N_out, block-diagonal over conv groups so that B·R stays a grouped kernel."""
    rows, cols = n_out // groups, k * n_out // groups
    B = torch.zeros(n_out, k * n_out, dtype=like.dtype, device=like.device)
    for g in range(groups):
        block = B[g * rows : (g + 1) * rows, g * cols : (g + 1) * cols]
        if b_init == "random":
            nn.init.xavier_uniform_(block, gain=b_gain(k, density))
        elif b_init == "orthogonal":
            block.copy_(nn.init.orthogonal_(torch.empty_like(block)) / math.sqrt(density))
        else:
            block.copy_(torch.eye(rows, dtype=like.dtype, device=like.device) / math.sqrt(density))
    return B


@dataclass(frozen=True)
class PFA(Rule):
    """e_in = δ (B∘M_B)(R∘M_R); grad_R = M_R ∘ ((B∘M_B)ᵀ grad_W); B fixed, R learned."""

    name = "pfa"
    label = "PFA"
    color = "C3"
    alignment_kind = "path"
    equation = "e_in = (δ B) R,  ΔR ∝ Bᵀ ΔW"
    k: int = 10
    b_init: str = "random"
    density: float = 1.0
    init: str = "xavier"
    path: str = "auto"

    def validate(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"rule {self.name!r}: k={self.k!r} is invalid; k must be an int ≥ 1")
        check_choice(self.name, "b_init", self.b_init, B_INITS)
        if self.b_init != "random" and self.k != 1:
            raise ValueError(
                f"rule {self.name!r}: b_init={self.b_init!r} needs k=1 (got k={self.k}); "
                "use b_init='random' for k > 1"
            )
        check_density(self.name, self.density)
        check_choice(self.name, "init", self.init, INITS)
        check_choice(self.name, "path", self.path, PATHS)

    def create_feedback(self, layer) -> None:
        w = layer.weight
        n_out, groups = w.shape[0], getattr(layer, "groups", 1)
        B = make_b(n_out, self.k, groups, self.b_init, self.density, w)
        add_feedback(layer, "B", B, learned=False)
        add_mask(layer, "B", self.density)
        R = new_tensor(layer, (self.k * n_out, *w.shape[1:]), self.init)
        add_feedback(layer, "R", R, learned=True)
        add_mask(layer, "R", self.density)

    def feedback(self, layer, x: Tensor | None = None):
        B, R = masked(layer, "B"), masked(layer, "R")
        if self._two_stage(layer, x):
            return TwoStage(B, R)
        return layer.product(B, R)

    def _two_stage(self, layer, x: Tensor | None) -> bool:
        if self.path != "auto" or x is None or layer.weight.dim() != 2:
            return self.path == "two_stage"
        n_out, n_in = layer.weight.shape
        n_mid, rows = self.k * n_out, x.numel() // n_in
        product = 2 * n_mid * n_out * n_in + rows * n_out * n_in
        two_stage = rows * n_mid * (n_out + 2 * n_in)
        return two_stage < product


@dataclass(frozen=True)
class PFAO(PFA):
    """PFA-o: PFA with k = 1 and an orthogonal B (B Bᵀ = I)."""

    name = "pfa_o"
    label = "PFA-o"
    color = "C5"
    alignment_kind = "path"
    equation = "PFA with k = 1, B orthogonal"
    k: int = 1
    b_init: str = "orthogonal"

    def validate(self) -> None:
        if self.k != 1 or self.b_init != "orthogonal":
            raise ValueError(
                "rule 'pfa_o' fixes k=1 and b_init='orthogonal'; for other values use rule='pfa' "
                f"(got k={self.k!r}, b_init={self.b_init!r})"
            )
        super().validate()
