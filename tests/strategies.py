"""Shared Hypothesis strategies: layer shapes, conv geometry, k, density, seeds, SGD schedules.

Everything is kept small (a handful of units, spatial sizes up to 9) so that one example of a
property costs milliseconds; the profiles in ``tests/conftest.py`` decide how many are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

# ------------------------------------------------------------------------------------------------
# Scalars
# ------------------------------------------------------------------------------------------------

seeds = st.integers(min_value=0, max_value=2**32 - 1)
"""Seeds for ``torch.manual_seed`` (the engine draws feedback tensors from the global RNG)."""

ks = st.integers(min_value=1, max_value=4)
"""PFA expansion ratio k = N_mid / N_out."""

densities = st.one_of(st.just(1.0), st.floats(min_value=0.3, max_value=0.9))
"""Feedback density ρ: dense (1) or a Bernoulli(ρ) mask."""

sparse_densities = st.floats(min_value=0.3, max_value=0.9)
"""A density strictly below 1, so that masks exist."""

paths = st.sampled_from(["auto", "product", "two_stage"])
"""PFA's backward path."""

# ------------------------------------------------------------------------------------------------
# Linear layers
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearCase:
    """A linear layer N_in → N_out on an input of shape ``lead + (N_in,)``."""

    n_in: int
    n_out: int
    bias: bool
    lead: tuple[int, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (*self.lead, self.n_in)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (*self.lead, self.n_out)


@st.composite
def linear_cases(draw: st.DrawFn, max_units: int = 7, extra_dims: bool = True) -> LinearCase:
    """Layer sizes 1..max_units, bias on/off, batch 1..4 and (optionally) one extra leading dim."""
    lead = (draw(st.integers(1, 4)),)
    if extra_dims and draw(st.booleans()):
        lead = (*lead, draw(st.integers(1, 3)))
    return LinearCase(
        n_in=draw(st.integers(1, max_units)),
        n_out=draw(st.integers(1, max_units)),
        bias=draw(st.booleans()),
        lead=lead,
    )


@st.composite
def mlp_widths(draw: st.DrawFn, depth: int = 3, max_units: int = 6) -> tuple[int, ...]:
    """Widths (N_0, …, N_depth) of an MLP with ``depth`` linear layers."""
    return tuple(draw(st.integers(1, max_units)) for _ in range(depth + 1))


# ------------------------------------------------------------------------------------------------
# Conv layers
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    """A Conv2d geometry plus an input size it is valid for."""

    batch: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int
    bias: bool
    padding_mode: str
    height: int
    width: int

    def kwargs(self) -> dict:
        """Keyword arguments of ``nn.Conv2d`` / ``alignment.Conv2d``."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "bias": self.bias,
            "padding_mode": self.padding_mode,
        }

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    def conv(
        self,
        x: torch.Tensor,
        kernel: torch.Tensor,
        bias: torch.Tensor | None = None,
        groups: int | None = None,
    ) -> torch.Tensor:
        """The plain torch convolution with this geometry (the oracle's forward)."""
        groups = self.groups if groups is None else groups
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self.explicit_padding(), mode=self.padding_mode)
            padding = 0
        return F.conv2d(x, kernel, bias, self.stride, padding, self.dilation, groups)

    def explicit_padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom), as ``F.pad`` takes it; 'same' puts the odd pixel last."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            th, tw = (d * (k - 1) for k, d in zip(self.kernel_size, self.dilation, strict=True))
            return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        ph, pw = self.padding
        return (pw, pw, ph, ph)


def _min_size(kernel: int, dilation: int, pad: int) -> int:
    return max(1, dilation * (kernel - 1) + 1 - 2 * pad)


@st.composite
def conv_cases(draw: st.DrawFn, max_groups: int = 3, max_per_group: int = 3) -> ConvCase:
    """Stride 1–2, padding int/'same'/'valid' ('same' only with stride 1), dilation 1–2, groups
    dividing both channel counts, bias on/off, zero/circular/reflect padding, inputs ≤ 9×9."""
    groups = draw(st.integers(1, max_groups))
    in_channels = groups * draw(st.integers(1, max_per_group))
    out_channels = groups * draw(st.integers(1, max_per_group))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kind = draw(st.sampled_from(["int", "int", "same", "valid"]))
    if kind == "same" and draw(st.booleans()):  # an even effective kernel: asymmetric padding
        dim = draw(st.integers(0, 1))
        kernel = tuple(2 if i == dim else kernel[i] for i in range(2))
        dilation = tuple(1 if i == dim else dilation[i] for i in range(2))
    if kind == "same":
        stride, padding, pads = (1, 1), "same", (0, 0)
        sizes = [(1, 6), (1, 6)]  # 'same' works for any input size
    else:
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        pads = (0, 0) if kind == "valid" else (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        padding = "valid" if kind == "valid" else pads
        sizes = [
            (_min_size(k, d, p), _min_size(k, d, p) + 4)
            for k, d, p in zip(kernel, dilation, pads, strict=True)
        ]
    if kind == "same":  # the largest side of the (possibly asymmetric) 'same' padding
        pads = tuple(d * (k - 1) - d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    padding_mode = "zeros"
    if kind != "valid" and max(pads) > 0:
        padding_mode = draw(st.sampled_from(["zeros", "zeros", "circular", "reflect"]))
    if padding_mode != "zeros":  # reflect/circular need the padding smaller than the input
        sizes = [(max(lo, p + 1), max(hi, p + 1)) for (lo, hi), p in zip(sizes, pads, strict=True)]
    height = draw(st.integers(*sizes[0]))
    width = draw(st.integers(*sizes[1]))
    return ConvCase(
        batch=draw(st.integers(1, 3)),
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        padding_mode=padding_mode,
        height=height,
        width=width,
    )


ASYMMETRIC_SAME = ConvCase(
    batch=2,
    in_channels=4,
    out_channels=2,
    kernel_size=(2, 3),
    stride=(1, 1),
    padding="same",
    dilation=(1, 2),
    groups=2,
    bias=True,
    padding_mode="zeros",
    height=5,
    width=4,
)
"""'same' with an even effective kernel (pads 0 above, 1 below): an explicit example for the
tests, since the drawn cases reach this branch only now and then."""


# ------------------------------------------------------------------------------------------------
# Optimiser schedules
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SGDSchedule:
    """Per-step lr and weight decay (applied through ``param_groups`` each step) and momentum."""

    lr: tuple[float, ...]
    weight_decay: tuple[float, ...]
    momentum: float
    dampening: float
    nesterov: bool

    @property
    def steps(self) -> int:
        return len(self.lr)


@st.composite
def sgd_schedules(
    draw: st.DrawFn, min_steps: int = 1, max_steps: int = 5, with_momentum: bool | None = None
) -> SGDSchedule:
    """Step count, lr_t ∈ [1e-3, 0.5], λ_t ∈ {0} ∪ [1e-3, 1] (η·λ ≤ 0.5 keeps c_t bounded),
    momentum 0 or in [0.1, 0.95] (``with_momentum`` forces one of the two), dampening, Nesterov."""
    steps = draw(st.integers(min_steps, max_steps))
    lr = tuple(draw(st.floats(1e-3, 0.5)) for _ in range(steps))
    weight_decay = tuple(draw(st.one_of(st.just(0.0), st.floats(1e-3, 1.0))) for _ in range(steps))
    if with_momentum is None:
        with_momentum = draw(st.booleans())
    momentum = draw(st.floats(0.1, 0.95)) if with_momentum else 0.0
    nesterov = with_momentum and draw(st.booleans())
    dampening = 0.0 if (nesterov or not with_momentum) else draw(st.sampled_from([0.0, 0.0, 0.3]))
    return SGDSchedule(lr, weight_decay, momentum, dampening, nesterov)
