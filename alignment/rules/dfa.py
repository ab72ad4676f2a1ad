"""Direct feedback alignment (Nøkland 2016): e_in = e_out D for every layer.

e_out = ∂L/∂logits of the whole network (batch × C); D is fixed, C × N_in (conv: C × C_in × kh ×
kw, e_out tiled over the layer's output grid, e_in = conv2d_input(D, tiled e_out) with the
layer's stride/padding/dilation and a dense D, groups=1). Each layer still updates W with its own
δ, which arrives by ordinary autograd (through the nonlinearity, BatchNorm and residual additions)
from the error injected at the next layer's input.

How e_out reaches the layers (carriers and one tap on the model output, all inside autograd),
and how outputs shaped (batch, …, C) are handled: :mod:`alignment.layers.direct`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor, nn

from alignment.layers.direct import attach_context, detach_contexts
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
        """Route the output error of ``model`` to ``layers`` (a tap on the model's output)."""
        attach_context(model, layers)

    def release(self, model: nn.Module) -> None:
        """Remove the output tap, so that the model can convert again to another rule."""
        detach_contexts(model)
