"""What a learning rule is: a small frozen dataclass of options plus four methods.

A rule decides, for each converted layer, which feedback tensors exist (``create_feedback``) and
which feedback the backward uses (``feedback``). Everything else (forward, the local weight update
grad_W = δᵀx, conversion, state_dict) is shared. A new rule is one file with a subclass and one
line in :data:`alignment.rules.RULES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from alignment.layers.feedback import Direct, Feedback, TwoStage

if TYPE_CHECKING:
    from alignment.layers.base import FeedbackLayer

INITS = ("xavier", "kaiming")

__all__ = ["Direct", "Feedback", "Rule", "TwoStage"]


@dataclass(frozen=True)
class Rule:
    """Base class. Subclasses add their options as dataclass fields and set ``name``."""

    name: ClassVar[str]
    equation: ClassVar[str] = ""
    label: ClassVar[str] = ""
    """Display label in tables and figures ('PFA-o'); '' = the name upper-cased."""
    color: ClassVar[str] = ""
    """Matplotlib colour in every figure ('C3'); '' = a stable colour derived from the name."""
    alignment_kind: ClassVar[str] = "feedback"
    """What ``feedback_alignment`` measures for the rule: 'weight', 'path', 'DFA', '' (BP)."""
    native_backward: ClassVar[bool] = False
    """True when the rule's backward is exactly torch autograd's (BP): the layer then runs the
    plain torch op, with no custom Function in the graph."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the option and its valid values if an option is invalid."""

    def bind(self, model: nn.Module) -> Rule:
        """The rule with options that depend on the whole model filled in (DFA: out_features)."""
        return self

    def create_feedback(self, layer: FeedbackLayer) -> None:
        """Register the rule's feedback tensors on a freshly converted layer."""

    def feedback(self, layer: FeedbackLayer, x: Tensor | None = None) -> Feedback:
        """The feedback the backward of this forward (on input ``x``) uses."""
        raise NotImplementedError

    def feedback_matrix(self, layer: FeedbackLayer) -> Tensor:
        """The effective feedback tensor the backward really uses (detached)."""
        feedback = self.feedback(layer)
        if isinstance(feedback, TwoStage):
            feedback = layer.product(feedback.B, feedback.R)
        return feedback.detach()

    def prepare_model(self, model: nn.Module, layers: list[FeedbackLayer]) -> None:
        """Called once by :func:`alignment.convert` on the converted root module."""

    def release(self, model: nn.Module) -> None:
        """Undo :meth:`prepare_model` on ``model`` (called by :func:`alignment.convert` before
        a model converted under this rule converts again, e.g. to another rule)."""

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def options(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_choice(rule: str, option: str, value: object, choices: tuple) -> None:
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"rule {rule!r}: {option}={value!r} is invalid; valid choices: {valid}")


def check_density(rule: str, density: float) -> None:
    if isinstance(density, bool) or not isinstance(density, int | float):
        raise ValueError(f"rule {rule!r}: density must be a number in (0, 1], got {density!r}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"rule {rule!r}: density={density!r} is outside (0, 1]; pass 0 < ρ ≤ 1")


def init_tensor(tensor: Tensor, init: str, gain: float = 1.0) -> Tensor:
    """Fill ``tensor`` in place: Xavier-uniform (the paper's) or Kaiming-uniform (ReLU gain)."""
    with torch.no_grad():
        if init == "xavier":
            return nn.init.xavier_uniform_(tensor, gain=gain)
        return nn.init.kaiming_uniform_(tensor, nonlinearity="relu").mul_(gain)


def new_tensor(
    layer: FeedbackLayer, shape: tuple[int, ...], init: str, gain: float = 1.0
) -> Tensor:
    w = layer.weight
    return init_tensor(torch.empty(shape, dtype=w.dtype, device=w.device), init, gain)


def add_feedback(layer: FeedbackLayer, name: str, tensor: Tensor, *, learned: bool) -> None:
    """Learned feedback becomes a Parameter; fixed feedback a buffer (in state_dict, no grad)."""
    if learned:
        layer.register_parameter(name, nn.Parameter(tensor))
    else:
        layer.register_buffer(name, tensor)


def add_mask(layer: FeedbackLayer, name: str, density: float) -> None:
    """A fixed Bernoulli(ρ) mask ``<name>_mask`` on feedback tensor ``name`` (only when ρ < 1)."""
    if density >= 1.0:
        return
    target = getattr(layer, name)
    mask = torch.bernoulli(torch.full_like(target, density, requires_grad=False))
    layer.register_buffer(f"{name}_mask", mask)
    with torch.no_grad():
        target.mul_(mask)


def masked(layer: FeedbackLayer, name: str) -> Tensor:
    """Feedback tensor ``name`` with its sparsity mask re-applied (by autograd: grads are masked).

    Fixed feedback (a buffer) is detached, so it can never pass a gradient on, even after an
    in-place edit under autograd.
    """
    tensor = getattr(layer, name)
    if name in layer._buffers:
        tensor = tensor.detach()
    mask = getattr(layer, f"{name}_mask", None)
    return tensor if mask is None else tensor * mask


def xavier_std(weight: Tensor) -> float:
    """sqrt(2 / (fan_in + fan_out)): the standard deviation of Xavier init for W's shape."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return math.sqrt(2.0 / (fan_in + fan_out))
