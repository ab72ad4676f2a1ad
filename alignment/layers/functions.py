"""The autograd Functions behind every rule (split form, so torch.func's vmap/jacrev work).

Notation (as in arXiv 2405.20594): y = x Wᵀ + b, δ = ∂L/∂y, e_in is the error sent to the input.

Every rule updates W with the local rule grad_W = δᵀx and the bias with Σδ; the rules differ
only in the feedback F used for e_in:

* :class:`LinearFeedback`, :class:`ConvFeedback`: e_in = δ F (conv: the transposed convolution
  with kernel F; one Function for Conv1d, Conv2d and Conv3d). F is any tensor of W's shape,
  built from the rule's tensors by ordinary autograd
  *outside* the Function. The Function returns grad_F = grad_W, so a learned F = B·R receives
  grad_R = Bᵀ grad_W by the chain rule (PFA), and a learned F = B receives grad_W (Kolen–Pollack).
  ``feedback=None`` sends no error at all (DFA injects its own, see :mod:`alignment.layers.direct`).
* :class:`LinearTwoStage`, :class:`ConvTwoStage`: PFA's explicit feedback neurons: a = δB,
  e_in = a R, grad_R = aᵀx. Same mathematics as the product path, other contraction order.
* :class:`LinearDirect`, :class:`ConvDirect`: DFA. Besides y the forward returns a zero
  *carrier* that the network output consumes (:mod:`alignment.layers.direct`), so its gradient
  is the output error routed to the layer; the backward sends e_in = e_out D (linear: per leading
  position; conv: D applied to e_out tiled over the output grid), each layer at its own turn, so
  no more than one injected error is alive at once.

The ``Conv2d*`` names are aliases of the ``Conv*`` Functions.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from alignment.layers.autocast import records_autocast, replays_autocast
from alignment.layers.conv_geometry import ConvGeometry, conv_backward


def _as_matrix(t: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1])


class LinearFeedback(torch.autograd.Function):
    """y = F.linear(x, W, b); e_in = δF, grad_W = δᵀx, grad_b = Σδ, grad_F = grad_W."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    @staticmethod
    @records_autocast
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, _, _, feedback = inputs
        ctx.save_for_backward(x, feedback)

    @staticmethod
    @replays_autocast
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, feedback = ctx.saved_tensors
        need_x, need_w, need_b, need_f = ctx.needs_input_grad
        grad_x = grad_w = grad_b = None
        if need_x and feedback is not None:
            grad_x = grad_out @ feedback
        if need_w or need_f:
            grad_w = _as_matrix(grad_out).mT @ _as_matrix(x)
        if need_b:
            grad_b = _as_matrix(grad_out).sum(0)
        return grad_x, grad_w if need_w else None, grad_b, grad_w if need_f else None


class LinearTwoStage(torch.autograd.Function):
    """PFA with explicit feedback neurons: a = δB, e_in = aR, grad_W = δᵀx, grad_R = aᵀx."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, B: Tensor, R: Tensor) -> Tensor:
        return F.linear(x, weight, bias)

    @staticmethod
    @records_autocast
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, _, _, B, R = inputs
        ctx.save_for_backward(x, B, R)

    @staticmethod
    @replays_autocast
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, B, R = ctx.saved_tensors
        need_x, need_w, need_b, _, need_r = ctx.needs_input_grad
        delta, x2 = _as_matrix(grad_out), _as_matrix(x)
        activity = delta @ B if (need_x or need_r) else None
        grad_x = (activity @ R).reshape(x.shape) if need_x else None
        grad_w = delta.mT @ x2 if need_w else None
        grad_b = delta.sum(0) if need_b else None
        grad_r = activity.mT @ x2 if need_r else None
        return grad_x, grad_w, grad_b, None, grad_r


class ConvFeedback(torch.autograd.Function):
    """y = convNd(x, W, b); e_in = convNd_input(F, δ), grad_W = convNd_weight(x, δ) = grad_F."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        feedback: Tensor | None,
        geometry: ConvGeometry,
    ) -> Tensor:
        return geometry.forward(x, weight, bias)

    @staticmethod
    @records_autocast
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, _, feedback, geometry = inputs
        ctx.geometry = geometry
        ctx.has_feedback = feedback is not None
        ctx.save_for_backward(x, weight if feedback is None else feedback)

    @staticmethod
    @replays_autocast
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, kernel = ctx.saved_tensors
        need_x, need_w, need_b, need_f, _ = ctx.needs_input_grad
        grad_x, grad_w, grad_b = conv_backward(
            grad_out,
            x,
            kernel,
            ctx.geometry,
            need_input=need_x and ctx.has_feedback,
            need_weight=need_w or need_f,
            need_bias=need_b,
        )
        return grad_x, grad_w if need_w else None, grad_b, grad_w if need_f else None, None


class ConvTwoStage(torch.autograd.Function):
    """PFA conv with explicit feedback neurons.

    a[n,m,…] = Σ_o B[o,m] δ[n,o,…]; e_in = convNd_input(R, a); grad_R = convNd_weight(x, a).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        B: Tensor,
        R: Tensor,
        geometry: ConvGeometry,
    ) -> Tensor:
        return geometry.forward(x, weight, bias)

    @staticmethod
    @records_autocast
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, _, B, R, geometry = inputs
        ctx.geometry = geometry
        ctx.save_for_backward(x, weight, B, R)

    @staticmethod
    @replays_autocast
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, B, R = ctx.saved_tensors
        need_x, need_w, need_b, _, need_r, _ = ctx.needs_input_grad
        _, grad_w, grad_b = conv_backward(
            grad_out,
            x,
            weight,
            ctx.geometry,
            need_input=False,
            need_weight=need_w,
            need_bias=need_b,
        )
        grad_x = grad_r = None
        if need_x or need_r:
            activity = torch.einsum("no...,om->nm...", grad_out, B)
            grad_x, grad_r, _ = conv_backward(
                activity, x, R, ctx.geometry, need_input=need_x, need_weight=need_r, need_bias=False
            )
        return grad_x, grad_w, grad_b, None, grad_r, None


class CarrierLayout(NamedTuple):
    """How a linear layer's leading dims map onto the model's own layout (batch first): view them
    as ``shape``, then permute by ``perm``. Attention passes this for its projections, whose
    inputs torch lays out as (T, B, E) or (T·B, E)."""

    shape: tuple[int, ...]
    perm: tuple[int, ...]


def _carrier_shape(x: Tensor, D: Tensor, layout: CarrierLayout | None) -> tuple[int, ...]:
    if layout is None:
        return (*x.shape[:-1], D.shape[0])
    return (*(layout.shape[i] for i in layout.perm), D.shape[0])


def inject_linear(e_out: Tensor, x: Tensor, D: Tensor, layout: CarrierLayout | None) -> Tensor:
    """e_in = e_out D at every leading position of x (e_out in the carrier's layout)."""
    if layout is not None:
        inverse = sorted(range(len(layout.perm)), key=layout.perm.__getitem__)
        e_out = e_out.permute(*inverse, len(inverse)).reshape(*x.shape[:-1], D.shape[0])
    return e_out @ D


def inject_conv(e_out: Tensor, x: Tensor, D: Tensor, out_size: tuple, geometry: ConvGeometry):
    """e_in = convNd_input(D, e_out tiled over the output grid), with a dense D (groups=1)."""
    tiled = e_out.reshape(*e_out.shape, *(1,) * len(out_size)).expand(*e_out.shape, *out_size)
    e_in, _, _ = conv_backward(
        tiled.contiguous(),
        x,
        D,
        geometry,
        need_input=True,
        need_weight=False,
        need_bias=False,
        groups=1,
    )
    return e_in


class LinearDirect(torch.autograd.Function):
    """DFA: y = F.linear(x, W, b) and a carrier (x's leading dims × C, in ``layout`` if given);
    e_in = e_out D per leading position, grad_W = δᵀx, grad_b = Σδ."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor, weight: Tensor, bias: Tensor | None, D: Tensor, layout: CarrierLayout | None
    ):
        return F.linear(x, weight, bias), x.new_zeros(_carrier_shape(x, D, layout))

    @staticmethod
    @records_autocast
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, _, _, D, layout = inputs
        ctx.layout = layout
        ctx.save_for_backward(x, D)

    @staticmethod
    @replays_autocast
    def backward(ctx: Any, grad_out: Tensor, e_out: Tensor) -> tuple[Tensor | None, ...]:
        x, D = ctx.saved_tensors
        need_x, need_w, need_b, _, _ = ctx.needs_input_grad
        grad_x = inject_linear(e_out, x, D, ctx.layout) if need_x else None
        grad_w = _as_matrix(grad_out).mT @ _as_matrix(x) if need_w else None
        grad_b = _as_matrix(grad_out).sum(0) if need_b else None
        return grad_x, grad_w, grad_b, None, None


class ConvDirect(torch.autograd.Function):
    """DFA conv: y = convNd(x, W, b) and a carrier (batch × C);
    e_in = convNd_input(D, tile(e_out))."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, D: Tensor, geometry: ConvGeometry):
        batch = x.shape[: x.dim() - geometry.dims - 1]
        return geometry.forward(x, weight, bias), x.new_zeros(*batch, D.shape[0])

    @staticmethod
    @records_autocast
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, weight, _, D, geometry = inputs
        ctx.geometry, ctx.out_hw = geometry, tuple(output[0].shape[-geometry.dims :])
        ctx.save_for_backward(x, weight, D)

    @staticmethod
    @replays_autocast
    def backward(ctx: Any, grad_out: Tensor, e_out: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, D = ctx.saved_tensors
        need_x, need_w, need_b, _, _ = ctx.needs_input_grad
        _, grad_w, grad_b = conv_backward(
            grad_out,
            x,
            weight,
            ctx.geometry,
            need_input=False,
            need_weight=need_w,
            need_bias=need_b,
        )
        grad_x = inject_conv(e_out, x, D, ctx.out_hw, ctx.geometry) if need_x else None
        return grad_x, grad_w, grad_b, None, None


def _cache_signatures(*functions: type[torch.autograd.Function]) -> None:
    """``Function.apply`` binds default arguments through ``inspect.signature(forward)`` on every
    call (≈ 20 µs per layer); computing it once here takes that off the training step."""
    for function in functions:
        function.forward.__signature__ = inspect.signature(function.forward)


_cache_signatures(
    LinearFeedback, LinearTwoStage, LinearDirect, ConvFeedback, ConvTwoStage, ConvDirect
)

Conv2dFeedback, Conv2dTwoStage, Conv2dDirect = ConvFeedback, ConvTwoStage, ConvDirect
"""The names from before Conv1d and Conv3d: the same Functions."""
