"""What every quantity module shares: the :class:`Quantity` interface and NaN-safe metrics.

A quantity computes one or more Dataset variables (named as in :mod:`alignment.recording.schema`)
from a :class:`~alignment.recording.context.StepContext`, as numpy arrays without the ``step`` dim:
``(layer,)`` for per-layer scalars, ``(layer, sample)``, ``(layer, sv)``, … in the layer order of
the network. A value that is undefined (a zero vector has no direction, a layer the rule does not
apply to) is NaN, never an exception, so one dead layer cannot stop a training run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from alignment.recording.context import Network, StepContext

NAN = math.nan


class Quantity:
    """One family of variables. ``when``: 'main', 'jacobian' (the sparser schedule) or 'static'."""

    variables: ClassVar[tuple[str, ...]] = ()
    when: ClassVar[str] = "main"

    def applies(self, net: Network) -> bool:
        """Whether the run records these variables at all (e.g. feedback_residual: PFA and KP)."""
        return True

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        raise NotImplementedError


DEGREES_PER_RADIAN = 180.0 / math.pi


def _flat64(t: Tensor) -> Tensor:
    return t.detach().reshape(-1).to(torch.float64)


def _kahan_in_place(ua: Tensor, ub: Tensor, dim: int | None = None) -> Tensor:
    """:func:`alignment.metrics.angle`'s formula 2·atan2(‖â − b̂‖, ‖â + b̂‖) on unit vectors,
    reusing ``ua``'s memory for â + b̂ (the same operations, so the same bits, with one large
    temporary instead of four: on CPU each fresh large buffer costs page faults)."""
    kwargs = {} if dim is None else {"dim": dim}
    diff = torch.linalg.vector_norm(ua - ub, **kwargs)
    summ = torch.linalg.vector_norm(ua.add_(ub), **kwargs)
    return 2.0 * torch.atan2(diff, summ) * DEGREES_PER_RADIAN


class Workspace:
    """Reusable buffers, kept by the recorder between records.

    Each fresh multi-megabyte buffer costs page faults when first written (on CPU these dominate
    e.g. the angle between two weight matrices), so the same few buffers are reused.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, Tensor] = {}

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
        key = (name, tuple(shape), dtype, torch.device(device))
        if key not in self._buffers:
            self._buffers[key] = torch.empty(shape, dtype=dtype, device=device)
        return self._buffers[key]

    def float64(self, numel: int, device) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(
            self.buffer(name, (numel,), torch.float64, device) for name in ("a", "b", "tmp")
        )


def compare(
    a: Tensor | None, b: Tensor | None, workspace: Workspace | None = None
) -> tuple[float, float, float, float]:
    """(angle(a, b) in degrees, ‖a‖/‖b‖, ‖a‖, ‖b‖), each NaN where undefined.

    :func:`alignment.metrics.angle`'s Kahan form 2·atan2(‖â − b̂‖, ‖â + b̂‖) in float64, with
    both norms scaled by ‖a‖: 2·atan2(‖a − r·b‖, ‖a + r·b‖), r = ‖a‖/‖b‖, so that no normalised
    copy is written (two fused passes instead of four over float64 buffers reused between records;
    equal to ``metrics.angle`` to rounding, about 1e-13 degrees).
    """
    if a is None or b is None:
        return NAN, NAN, safe_norm(a), safe_norm(b)
    if a.shape != b.shape:
        raise ValueError(f"compare: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if _same_tensor(a, b):  # BP: W against W, the rule's gradient against itself
        norm = safe_norm(a, workspace)  # (exactly what the general path gives: 0° and 1)
        return (NAN, NAN, norm, norm) if norm == 0.0 else (0.0, 1.0, norm, norm)
    workspace = Workspace() if workspace is None else workspace
    ua, ub, tmp = workspace.float64(a.numel(), a.device)
    ua.copy_(a.detach().reshape(-1))
    ub.copy_(b.detach().reshape(-1))
    na, nb = torch.linalg.vector_norm(ua), torch.linalg.vector_norm(ub)
    fa, fb = float(na), float(nb)
    if fa == 0.0 or fb == 0.0:
        return NAN, (fa / fb if fb > 0 else NAN), fa, fb
    r = fa / fb
    diff = torch.linalg.vector_norm(torch.sub(ua, ub, alpha=r, out=tmp))
    summ = torch.linalg.vector_norm(torch.add(ua, ub, alpha=r, out=tmp))
    theta = 2.0 * torch.atan2(diff, summ) * DEGREES_PER_RADIAN
    return float(theta), fa / fb, fa, fb


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    """True if ``a`` and ``b`` view the same memory the same way (hence are equal)."""
    return (
        a.data_ptr() == b.data_ptr()
        and a.dtype == b.dtype
        and a.stride() == b.stride()
        and a.storage_offset() == b.storage_offset()
        and a.device == b.device
    )


def safe_angle(a: Tensor | None, b: Tensor | None) -> float:
    """angle(a, b) in degrees, NaN when either is missing or has zero norm."""
    return compare(a, b)[0]


def safe_ratio(a: Tensor | None, b: Tensor | None) -> float:
    """‖a‖/‖b‖, NaN when either is missing or ‖b‖ = 0."""
    return compare(a, b)[1]


def safe_norm(a: Tensor | None, workspace: Workspace | None = None) -> float:
    """‖a‖ in float64 (NaN for None)."""
    if a is None:
        return NAN
    if workspace is None:
        return float(torch.linalg.vector_norm(_flat64(a)))
    ua = workspace.float64(a.numel(), a.device)[0]
    return float(torch.linalg.vector_norm(ua.copy_(a.detach().reshape(-1))))


def safe_angle_rows(a: Tensor, b: Tensor) -> np.ndarray:
    """Per-row angles in degrees (:func:`alignment.metrics.angle_rows`); NaN for zero rows."""
    rows = a.shape[0]
    a64 = a.detach().reshape(rows, -1).to(torch.float64)
    b64 = b.detach().reshape(rows, -1).to(torch.float64)
    na = torch.linalg.vector_norm(a64, dim=1, keepdim=True)
    nb = torch.linalg.vector_norm(b64, dim=1, keepdim=True)
    valid = ((na > 0) & (nb > 0)).squeeze(1)
    if a64.data_ptr() == a.data_ptr():
        a64 = a64.clone()
    ua = a64.div_(torch.where(na > 0, na, 1.0))
    ub = b64 / torch.where(nb > 0, nb, 1.0)
    theta = _kahan_in_place(ua, ub, dim=1)
    return torch.where(valid, theta, math.nan).cpu().numpy()


def per_layer(net: Network, values: dict[str, float]) -> np.ndarray:
    """A (layer,) float64 array in network order; layers missing from ``values`` are NaN."""
    return np.array([values.get(name, NAN) for name in net.names], dtype=np.float64)


def stack_rows(net: Network, rows: dict[str, np.ndarray], width: int) -> np.ndarray:
    """A (layer, width) float64 array; rows shorter than ``width`` and missing layers NaN-padded."""
    out = np.full((len(net.names), width), NAN)
    for i, name in enumerate(net.names):
        row = rows.get(name)
        if row is not None:
            out[i, : len(row)] = row
    return out
