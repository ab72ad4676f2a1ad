"""Direct feedback alignment (Nøkland 2016): e_in = e_out D for every layer.

e_out = ∂L/∂logits of the whole network (batch × C); D is fixed, C × N_in (conv: C × C_in × kh ×
kw, e_out tiled over the layer's output grid, e_in = conv2d_input(D, tiled e_out) with the
layer's stride/padding/dilation and a dense D, groups=1). Each layer still updates W with its own
δ, which arrives by ordinary autograd (through the nonlinearity, BatchNorm and residual additions)
from the error injected at the next layer's input.

How e_out reaches the layers: inside the converted model's forward, every DFA layer returns, next
to y, a zero *carrier* (batch × C) that this module collects. When the model's forward ends, its
output passes through one identity autograd Function, :class:`DirectFeedbackTap`, that also takes
the carriers; its backward hands e_out to each of them, so every layer's own backward
(:class:`alignment.layers.functions.LinearDirect`, ``Conv2dDirect``) computes e_out·D when its
turn comes. Everything stays inside autograd: no module backward hooks and no state between
forward and backward, so two forwards before one backward each use their own error, and
torch.func transforms work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from alignment.layers.functions import _cache_signatures
from alignment.rules.base import (
    INITS,
    Direct,
    Rule,
    add_feedback,
    add_mask,
    check_choice,
    check_density,
    masked,
    new_tensor,
)


class DirectFeedbackTap(torch.autograd.Function):
    """Identity on the logits; its backward gives e_out to every DFA layer's carrier."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: Tensor, *carriers: Tensor) -> Tensor:
        return logits.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, e_out: Tensor) -> tuple[Tensor, ...]:
        return (e_out,) * len(ctx.needs_input_grad)


_cache_signatures(DirectFeedbackTap)


class DirectFeedbackContext:
    """Collects the carriers of one forward of a DFA model and connects them to its output."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Tensor]] | None = None

    def begin(self, module: nn.Module, args: tuple) -> None:
        self.pending = []

    def sink(self, layer: nn.Module):
        if self.pending is None:
            raise RuntimeError(
                f"DFA layer {type(layer).__name__} ran outside the forward of the model returned "
                "by alignment.convert(model, 'dfa'), so no output error can reach it. Call the "
                "converted model, or run this under torch.no_grad() for evaluation."
            )
        pending = self.pending
        return lambda carrier: pending.append((type(layer).__name__, carrier))

    def finish(self, module: nn.Module, args: tuple, output: object) -> object:
        pending, self.pending = self.pending, None
        if not pending:
            return output
        if not isinstance(output, Tensor) or output.dim() != 2:
            raise TypeError(
                "DFA needs the converted model to return one tensor of logits (batch × C); got "
                f"{type(output).__name__}{tuple(getattr(output, 'shape', ()))}"
            )
        for name, carrier in pending:
            if carrier.shape[-1] != output.shape[-1]:
                raise ValueError(
                    f"DFA feedback D of a {name} layer has {carrier.shape[-1]} rows but the model "
                    f"outputs {output.shape[-1]} units; pass out_features={output.shape[-1]} to "
                    "alignment.convert"
                )
        return DirectFeedbackTap.apply(output, *(carrier for _, carrier in pending))


@dataclass(frozen=True)
class DFA(Rule):
    """e_in = e_out (D∘M); D fixed, Xavier-uniform, C × N_in (conv: C × C_in × kh × kw)."""

    name = "dfa"
    label = "DFA"
    color = "C2"
    alignment_kind = "DFA"
    equation = "e_in = e_out D"
    density: float = 1.0
    init: str = "xavier"
    out_features: int | None = None

    def validate(self) -> None:
        check_density(self.name, self.density)
        check_choice(self.name, "init", self.init, INITS)
        c = self.out_features
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ValueError(f"rule 'dfa': out_features={c!r} must be a positive int")

    def bind(self, model: nn.Module) -> DFA:
        if self.out_features is not None:
            return self
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(
                "rule 'dfa': cannot infer the number of network outputs C (no nn.Linear in the "
                "model); pass out_features=C to alignment.convert"
            )
        return dataclasses.replace(self, out_features=linears[-1].out_features)

    def create_feedback(self, layer) -> None:
        if self.out_features is None:
            raise ValueError("rule 'dfa' needs out_features; alignment.convert infers it")
        w = layer.weight
        shape = (w.shape[1],) if w.dim() == 2 else (layer.in_channels, *w.shape[2:])
        add_feedback(
            layer, "D", new_tensor(layer, (self.out_features, *shape), self.init), learned=False
        )
        add_mask(layer, "D", self.density)

    def feedback(self, layer, x: Tensor | None = None) -> Direct | None:
        """A Direct projection when the layer's input needs an error, else no input error."""
        context = getattr(layer, "dfa_context", None)
        if context is None:
            raise RuntimeError(
                "a DFA layer must be part of a model converted with alignment.convert(model, "
                "'dfa'), which routes the network's output error to it"
            )
        if x is None or not x.requires_grad:
            return None
        return Direct(masked(layer, "D"), context.sink(layer))

    def feedback_matrix(self, layer) -> Tensor:
        return masked(layer, "D").detach()

    def prepare_model(self, model: nn.Module, layers: list) -> None:
        context = DirectFeedbackContext()
        for layer in layers:
            layer.dfa_context = context
        model.register_forward_pre_hook(context.begin)
        model.register_forward_hook(context.finish)
