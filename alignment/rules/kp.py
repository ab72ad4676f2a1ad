"""Kolen–Pollack (Kolen & Pollack 1994; Akrout et al. 2019): e_in = δ B, B learned like W."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from alignment.rules.fa import FA


@dataclass(frozen=True)
class KP(FA):
    """e_in = δ B; B is a Parameter with grad_B = grad_W = δᵀx (the update of Wᵀ in the paper's
    orientation). Put B in the same optimizer group as W so it also gets W's weight decay; then
    B − W contracts by the same factor c_t as PFA's R − BᵀW."""

    name = "kp"
    label = "KP"
    color = "C6"
    alignment_kind = "weight"
    equation = "e_in = δ B,  ΔB = ΔW"

    def create_feedback(self, layer) -> None:
        super().create_feedback(layer)
        B = layer._buffers.pop("B")
        layer.register_parameter("B", nn.Parameter(B))
