"""Direct feedback alignment (Nøkland 2016): e_in = e_out D for every layer.

e_out = ∂L/∂logits of the whole network (batch × C); D is fixed, C × N_in (conv: C × C_in × kh ×
kw, e_out tiled over the layer's output grid, e_in = conv2d_input(D, tiled e_out) with the
layer's stride/padding/dilation and a dense D, groups=1). Each layer still updates W with its own
δ, which arrives by ordinary autograd (through the nonlinearity, BatchNorm and residual additions)
from the error injected at the next layer's input.

How e_out reaches the layers: inside the converted model's forward, every DFA layer records its
input. When the forward ends, the model output passes through one identity autograd Function,
:class:`DirectFeedbackTap`, that takes those inputs too. Its backward receives e_out and returns
e_out D as the gradient of each layer input, while the layers themselves return none. Everything
stays inside autograd: no module backward hooks, no state between forward and backward, so two
forwards before one backward each use their own error, and torch.func transforms work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from alignment.layers.conv_geometry import conv_backward
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


class DirectFeedbackTap(torch.autograd.Function):
    """Identity on the logits; backward sends e_out·D_l to every recorded layer input x_l."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: Tensor, geometries: tuple, *inputs_and_feedback: Tensor) -> Tensor:
        return logits.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, geometries, *tensors = inputs
        ctx.geometries = geometries
        ctx.save_for_backward(*tensors)

    @staticmethod
    def backward(ctx: Any, e_out: Tensor) -> tuple[Tensor | None, ...]:
        tensors = ctx.saved_tensors
        n = len(ctx.geometries)
        xs, feedbacks = tensors[:n], tensors[n:]
        needs = ctx.needs_input_grad[2 : 2 + n]
        grads = [
            _inject(e_out, x, D, geometry) if need else None
            for x, D, geometry, need in zip(xs, feedbacks, ctx.geometries, needs, strict=True)
        ]
        return (e_out, None, *grads, *([None] * n))


def _inject(e_out: Tensor, x: Tensor, D: Tensor, geometry) -> Tensor:
    if geometry is None:  # linear: e_in = e_out D, broadcast over any middle dims of x
        e_in = e_out @ D
        return e_in.reshape(e_in.shape[:1] + (1,) * (x.dim() - 2) + e_in.shape[-1:]).expand(x.shape)
    geometry, out_hw = geometry
    tiled = e_out[..., None, None].expand(*e_out.shape, *out_hw).contiguous()
    e_in, _, _ = conv_backward(
        tiled, x, D, geometry, need_input=True, need_weight=False, need_bias=False, groups=1
    )
    return e_in


class DirectFeedbackContext:
    """Collects the injection points (layer inputs) of one forward of a DFA model."""

    def __init__(self) -> None:
        self.pending: list | None = None

    def begin(self, module: nn.Module, args: tuple) -> None:
        self.pending = []

    def record(self, layer, x: Tensor, y: Tensor) -> None:
        if self.pending is None:
            raise RuntimeError(
                f"DFA layer {type(layer).__name__} ran outside the forward of the model returned "
                "by "
                "alignment.convert(model, 'dfa'), so no output error can reach it. Call the "
                "converted model, or run this under torch.no_grad() for evaluation."
            )
        if x.requires_grad:
            geometry = (layer.geometry, tuple(y.shape[-2:])) if y.dim() == 4 else None
            self.pending.append((layer, x, geometry))

    def finish(self, module: nn.Module, args: tuple, output: object) -> object:
        pending, self.pending = self.pending, None
        if not pending or not torch.is_grad_enabled():
            return output
        if not isinstance(output, Tensor) or output.dim() != 2:
            raise TypeError(
                "DFA needs the converted model to return one tensor of logits (batch × C); got "
                f"{type(output).__name__}{tuple(getattr(output, 'shape', ()))}"
            )
        feedbacks = [layer.feedback_matrix() for layer, _, _ in pending]
        for (layer, _, _), D in zip(pending, feedbacks, strict=True):
            if D.shape[0] != output.shape[-1]:
                raise ValueError(
                    f"DFA feedback D of {type(layer).__name__} has {D.shape[0]} rows but the model "
                    f"outputs {output.shape[-1]} units; pass out_features={output.shape[-1]} to "
                    "alignment.convert"
                )
        geometries = tuple(g for _, _, g in pending)
        xs = [x for _, x, _ in pending]
        return DirectFeedbackTap.apply(output, geometries, *xs, *feedbacks)


@dataclass(frozen=True)
class DFA(Rule):
    """e_in = e_out (D∘M); D fixed, Xavier-uniform, C × N_in (conv: C × C_in × kh × kw)."""

    name = "dfa"
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

    def feedback(self, layer, x: Tensor | None = None) -> None:
        return None

    def feedback_matrix(self, layer) -> Tensor:
        return masked(layer, "D").detach()

    def after_forward(self, layer, x: Tensor, y: Tensor) -> None:
        context = getattr(layer, "dfa_context", None)
        if context is None:
            raise RuntimeError(
                "a DFA layer must be part of a model converted with alignment.convert(model, "
                "'dfa'), which routes the network's output error to it"
            )
        context.record(layer, x, y)

    def prepare_model(self, model: nn.Module, layers: list) -> None:
        context = DirectFeedbackContext()
        for layer in layers:
            layer.dfa_context = context
        model.register_forward_pre_hook(context.begin)
        model.register_forward_hook(context.finish)
