"""How DFA's output error reaches every layer: carriers, one tap on the output, no hooks on layers.

Inside the forward of a model converted to DFA, every DFA layer returns, next to y, a zero
*carrier* (its leading dims × C) that a :class:`DirectFeedbackContext` collects. When the model's
forward ends, its output passes through one identity autograd Function,
:class:`DirectFeedbackTap`, that also takes the carriers; its backward hands each carrier the
output error e_out = ∂L/∂output, so every layer's own backward
(:class:`alignment.layers.functions.LinearDirect`, ``ConvDirect``) computes e_out·D when its turn
comes. Everything stays inside autograd: no module backward hooks and no state between forward
and backward, so two forwards before one backward each use their own error, and torch.func
transforms work.

Outputs shaped (batch, …, C), e.g. per-token logits (batch, T, C): a carrier with exactly the
output's shape (a Linear layer whose leading dims are the output's positions) gets each
position's own error, so e_in[b, t] = e_out[b, t] D. Any other carrier (batch, …, C) gets the
error summed over the output's positions, Σ_p e_out[b, p], tiled over its own positions (conv
layers: over the output grid), which for a (batch, C) output is the plain e_out. Dimension 0 is
the batch in both; a carrier whose batch size differs from the output's is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from alignment.layers.functions import _cache_signatures


def route_error(e_out: Tensor, carrier_shape: torch.Size) -> Tensor:
    """The error a carrier of ``carrier_shape`` receives from the output error ``e_out``."""
    if e_out.shape == carrier_shape:
        return e_out
    pooled = e_out.sum(tuple(range(1, e_out.dim() - 1))) if e_out.dim() > 2 else e_out
    lead = pooled.shape[:-1]
    view = lead + (1,) * (len(carrier_shape) - 1 - len(lead)) + pooled.shape[-1:]
    return pooled.reshape(view).expand(carrier_shape)


class DirectFeedbackTap(torch.autograd.Function):
    """Identity on the output; its backward routes e_out to every DFA layer's carrier."""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits: Tensor, *carriers: Tensor) -> Tensor:
        return logits.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.shapes = [c.shape for c in inputs[1:]]

    @staticmethod
    def backward(ctx: Any, e_out: Tensor) -> tuple[Tensor, ...]:
        return (e_out, *(route_error(e_out, shape) for shape in ctx.shapes))


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
        if not isinstance(output, Tensor) or output.dim() < 1:
            raise TypeError(
                "DFA needs the converted model to return one tensor of logits (batch × C, or "
                f"batch × … × C); got {type(output).__name__}"
                f"{tuple(getattr(output, 'shape', ()))}"
            )
        for name, carrier in pending:
            if carrier.shape[-1] != output.shape[-1]:
                raise ValueError(
                    f"DFA feedback D of a {name} layer has {carrier.shape[-1]} rows but the model "
                    f"outputs {output.shape[-1]} units; pass out_features={output.shape[-1]} to "
                    "alignment.convert"
                )
            mismatch = carrier.shape != output.shape and output.dim() > 1
            if mismatch and carrier.shape[0] != output.shape[0]:
                raise ValueError(
                    f"DFA: a {name} layer's input has batch size {carrier.shape[0]} in dim 0 but "
                    f"the model output {tuple(output.shape)} has {output.shape[0]}; DFA takes "
                    "dim 0 as the batch (use batch_first layouts)"
                )
        return DirectFeedbackTap.apply(output, *(carrier for _, carrier in pending))


def attach_context(model: nn.Module, layers: list[nn.Module]) -> DirectFeedbackContext:
    """One context for ``model``: every layer's carriers connect to the model's output."""
    context = DirectFeedbackContext()
    for layer in layers:
        layer.dfa_context = context
    model.register_forward_pre_hook(context.begin)
    model.register_forward_hook(context.finish)
    return context


def detach_contexts(model: nn.Module) -> None:
    """Remove every DFA context from ``model`` (its hooks, its layers' references)."""
    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for key, hook in list(hooks.items()):
            if isinstance(getattr(hook, "__self__", None), DirectFeedbackContext):
                del hooks[key]
    for module in model.modules():
        if "dfa_context" in module.__dict__:
            del module.dfa_context
