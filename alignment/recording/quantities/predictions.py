"""feedback_alignment_predicted (deg) and feedback_norm_ratio_predicted, per layer: what the
theory predicts for ``feedback_alignment`` and ``feedback_norm_ratio`` given the feedback *as
realised* in this run.

* PFA, PFA-o: the expected angle and norm ratio at the weight-decay fixed point R* = P⊙BᵀW for the
  realised B (its B·Bᵀ spectrum when dense), :func:`alignment.theory.realised_path_alignment`.
  B is fixed, so this is computed once per run and repeated at every record.
* FA: 90° (B independent of W); the norm ratio has no prediction.
* uSF: the angle between W and ρ-masked sign(W) for the current W, cos θ = √ρ·‖W‖₁/(√n·‖W‖₂),
  exact for ρ = 1 (expected over the mask otherwise); ratio s·√(ρ·n)/‖W‖₂.
* frSF, brSF: the same angle with |B| uniform, E|b|/√(E b²) = √3/2; no norm-ratio prediction.
* BP: 0° and 1. DFA, Kolen–Pollack: NaN (no closed form).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from alignment.recording.quantities.common import NAN, Quantity, per_layer
from alignment.rules import BP, BRSF, FA, FRSF, KP, PFA, USF
from alignment.rules.base import masked, xavier_std
from alignment.theory import realised_path_alignment

if TYPE_CHECKING:
    from alignment.layers.base import FeedbackLayer
    from alignment.recording.context import StepContext

UNIFORM_ABS_RATIO = math.sqrt(3.0) / 2.0
"""E|b|/√(E b²) of a centred uniform variable (the |B| of frSF and brSF)."""


def _sign_angle(w: torch.Tensor, density: float, factor: float = 1.0) -> float:
    """Angle (deg) between W and ρ-masked (magnitude-scaled) sign(W), expected over the mask."""
    w64 = w.detach().reshape(-1).to(torch.float64)
    l2 = float(torch.linalg.vector_norm(w64))
    if l2 == 0.0:
        return NAN
    l1 = float(torch.linalg.vector_norm(w64, 1))
    cos = factor * math.sqrt(density) * l1 / (math.sqrt(w64.numel()) * l2)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def static_prediction(layer: FeedbackLayer) -> tuple[float, float] | None:
    """(angle, ratio) for rules whose prediction does not change during training, else None."""
    rule = layer.rule
    if isinstance(rule, BP):
        return 0.0, 1.0
    if isinstance(rule, PFA):
        return realised_path_alignment(masked(layer, "B").cpu().numpy(), rule.density)
    if isinstance(rule, FA) and not isinstance(rule, KP):
        return 90.0, NAN
    return None


def prediction(layer: FeedbackLayer) -> tuple[float, float]:
    """(angle, ratio) predicted for ``layer`` at its current weights (NaN where none)."""
    rule = layer.rule
    if isinstance(rule, USF):
        w = layer.weight.detach()
        angle = _sign_angle(w, rule.density)
        norm = float(torch.linalg.vector_norm(w.reshape(-1).to(torch.float64)))
        scale = xavier_std(w) * math.sqrt(rule.density * w.numel())
        return angle, (scale / norm if norm > 0 else NAN)
    if isinstance(rule, FRSF | BRSF):
        return _sign_angle(layer.weight, rule.density, UNIFORM_ABS_RATIO), NAN
    fixed = static_prediction(layer)
    return (NAN, NAN) if fixed is None else fixed


class Predictions(Quantity):
    variables = ("feedback_alignment_predicted", "feedback_norm_ratio_predicted")

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        net = ctx.net
        fixed = net.cache.get("static_predictions")
        if fixed is None:
            with torch.no_grad():
                fixed = {name: static_prediction(layer) for name, layer in net.layers.items()}
            net.cache["static_predictions"] = fixed
        angles, ratios = {}, {}
        with torch.no_grad():
            for name, layer in net.layers.items():
                angles[name], ratios[name] = fixed[name] or prediction(layer)
        return {
            "feedback_alignment_predicted": per_layer(net, angles),
            "feedback_norm_ratio_predicted": per_layer(net, ratios),
        }


QUANTITY = Predictions()
