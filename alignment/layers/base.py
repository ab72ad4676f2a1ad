"""What every converted layer shares: its rule, its feedback matrix, conversion from torch.nn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from alignment.rules.base import Rule


class FeedbackLayer(nn.Module):
    """Mixin for :class:`alignment.Linear` and :class:`alignment.Conv2d`.

    The layer keeps ``weight`` and ``bias`` as ordinary Parameters updated by grad_W = δᵀx; the
    rule's feedback tensors are attributes named as in the paper (``B``, ``R``, ``D``), buffers
    when fixed and Parameters when learned.
    """

    rule: Rule
    weight: nn.Parameter

    def attach_rule(self, rule: Rule) -> None:
        self.rule = rule
        rule.create_feedback(self)

    def training_graph_needed(self, x: Tensor) -> bool:
        """Whether this forward needs the rule's backward: not under ``torch.no_grad``, and not
        for a rule whose backward is torch's own (BP); the forward is then the plain torch one
        (bitwise the same output)."""
        return torch.is_grad_enabled() and not self.rule.native_backward

    def feedback_matrix(self) -> Tensor:
        """The effective feedback tensor the backward uses (W's shape; DFA: C × input shape)."""
        return self.rule.feedback_matrix(self)

    def product(self, B: Tensor, R: Tensor) -> Tensor:
        """The effective feedback B·R of a two-factor pathway (PFA)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.rule.options().items())
        rule = f"rule={self.rule.name!r}" + (f", {options}" if options else "")
        return f"{super().extra_repr()}, {rule}"

    @classmethod
    def from_module(cls, module: nn.Module, rule: Rule) -> Self:
        """A converted copy of ``module`` (a torch.nn layer of the matching type) under ``rule``.

        Weight and bias are copied (bitwise), so the forward output is unchanged; the new layer is
        built on the meta device first, so conversion draws no random numbers but the rule's.
        """
        with torch.device("meta"):
            layer = cls(**cls.constructor_args(module))
        layer.weight = nn.Parameter(module.weight.detach().clone(), module.weight.requires_grad)
        if module.bias is not None:
            layer.bias = nn.Parameter(module.bias.detach().clone(), module.bias.requires_grad)
        layer.train(module.training)
        layer.attach_rule(rule)
        return layer

    @staticmethod
    def constructor_args(module: nn.Module) -> dict:
        raise NotImplementedError
