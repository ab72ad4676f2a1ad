"""Alignment metrics between a feedback path and the forward weights.

As Li & Benna (arXiv 2405.20594) define them:

* :func:`angle` — the angle in degrees between two tensors, flattened:
  ``angle(a, b) = (180/π)·arccos(clip(⟨â, b̂⟩, −1, 1))`` with ``â = a/‖a‖``.
* :func:`angle_rows` — the same angle per leading index (dim 0), e.g. one angle per sample.
* :func:`norm_ratio` — ``‖a‖ / ‖b‖`` (path norm ratio ``‖B·R‖/‖W‖``, weight norm ratio ``‖B‖/‖W‖``).

Numerics. The angle is evaluated with Kahan's form ``θ = 2·atan2(‖â − b̂‖, ‖â + b̂‖)``, which is
the same function as the arccos form for every pair of non-zero tensors but keeps full relative
precision near 0° and 180° (``arccos`` of a rounded cosine loses about half the digits there: in
float32 the self-angle of the arccos form can read 0.02° instead of 0°). It needs no clipping,
gives exactly 0° for ``angle(a, a)`` and exactly 180° for ``angle(a, -a)``. Reductions run in
float64 (except on devices without float64, e.g. MPS, where the input dtype is used) and the result
is cast back to the (promoted) input dtype. Everything is differentiable through autograd; the
zero-norm checks synchronise with the device once per call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["angle", "angle_rows", "norm_ratio"]

_DEGREES_PER_RADIAN = 180.0 / math.pi


def _result_dtype(a: Tensor, b: Tensor, name: str) -> torch.dtype:
    """Promoted floating dtype of ``a`` and ``b``; ``TypeError`` for non-floating inputs."""
    if not (torch.is_floating_point(a) and torch.is_floating_point(b)):
        raise TypeError(f"{name}: expected floating-point tensors, got {a.dtype} and {b.dtype}")
    return torch.promote_types(a.dtype, b.dtype)


def _work_dtype(a: Tensor, result: torch.dtype) -> torch.dtype:
    """Dtype for the reductions: float64 where the device supports it."""
    return result if a.device.type == "mps" else torch.float64


def _check_shapes(a: Tensor, b: Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}; "
            "both tensors must have the same shape"
        )


def _check_nonzero(norms: Tensor, which: str, name: str) -> None:
    """Raise ``ValueError`` when any entry of ``norms`` is exactly zero."""
    zero = norms == 0
    if bool(zero.any()):
        if norms.ndim == 0:
            raise ValueError(f"{name}: tensor {which} has zero norm; the angle is undefined")
        rows = torch.nonzero(zero).flatten().tolist()
        shown = rows[:8]
        more = "" if len(rows) <= 8 else f" (and {len(rows) - 8} more)"
        raise ValueError(
            f"{name}: tensor {which} has zero norm in row(s) {shown}{more}; the angle is undefined"
        )


def _kahan_angle_deg(ua: Tensor, ub: Tensor, dim: int | None) -> Tensor:
    """Degrees between unit vectors: ``(180/π)·2·atan2(‖ua − ub‖, ‖ua + ub‖)``."""
    if dim is None:
        diff = torch.linalg.vector_norm(ua - ub)
        summ = torch.linalg.vector_norm(ua + ub)
    else:
        diff = torch.linalg.vector_norm(ua - ub, dim=dim)
        summ = torch.linalg.vector_norm(ua + ub, dim=dim)
    return 2.0 * torch.atan2(diff, summ) * _DEGREES_PER_RADIAN


def angle(a: Tensor, b: Tensor) -> Tensor:
    """Angle in degrees between ``a`` and ``b`` as flattened vectors (the paper's angle).

    ``angle(a, b) = (180/π)·arccos(clip(⟨â, b̂⟩, −1, 1))``, ``â = vec(a)/‖a‖``, ``b̂ = vec(b)/‖b‖``,
    evaluated in the equivalent, better-conditioned form ``2·atan2(‖â − b̂‖, ‖â + b̂‖)``.

    Args:
        a: a floating-point tensor (any number of dimensions).
        b: a floating-point tensor of the same shape.

    Returns:
        A 0-d tensor in ``[0, 180]`` with the promoted dtype of ``a`` and ``b``.

    Raises:
        ValueError: if the shapes differ or either tensor has zero norm.
        TypeError: if either tensor is not floating point.
    """
    out_dtype = _result_dtype(a, b, "angle")
    _check_shapes(a, b, "angle")
    work = _work_dtype(a, out_dtype)
    va = a.reshape(-1).to(work)
    vb = b.reshape(-1).to(work)
    na = torch.linalg.vector_norm(va)
    nb = torch.linalg.vector_norm(vb)
    _check_nonzero(na, "a", "angle")
    _check_nonzero(nb, "b", "angle")
    return _kahan_angle_deg(va / na, vb / nb, dim=None).to(out_dtype)


def angle_rows(a: Tensor, b: Tensor) -> Tensor:
    """Angle in degrees between ``a[i]`` and ``b[i]`` for every leading index ``i``.

    ``θ_i = (180/π)·arccos(clip(⟨â_i, b̂_i⟩, −1, 1))`` where ``â_i`` is ``a[i]`` flattened over all
    remaining dimensions and normalised (e.g. per-sample gradient angles of a batch).

    Args:
        a: a floating-point tensor with at least one dimension.
        b: a floating-point tensor of the same shape.

    Returns:
        A 1-d tensor of length ``a.shape[0]`` with the promoted dtype of ``a`` and ``b``.

    Raises:
        ValueError: if the shapes differ, the tensors are 0-d, or any row has zero norm
            (a zero row has no direction; it is reported instead of returning nan).
        TypeError: if either tensor is not floating point.
    """
    out_dtype = _result_dtype(a, b, "angle_rows")
    _check_shapes(a, b, "angle_rows")
    if a.ndim == 0:
        raise ValueError("angle_rows: expected tensors with a leading (row) dimension, got 0-d")
    work = _work_dtype(a, out_dtype)
    rows = a.shape[0]
    va = a.reshape(rows, -1).to(work)
    vb = b.reshape(rows, -1).to(work)
    na = torch.linalg.vector_norm(va, dim=1, keepdim=True)
    nb = torch.linalg.vector_norm(vb, dim=1, keepdim=True)
    _check_nonzero(na.squeeze(1), "a", "angle_rows")
    _check_nonzero(nb.squeeze(1), "b", "angle_rows")
    return _kahan_angle_deg(va / na, vb / nb, dim=1).to(out_dtype)


def norm_ratio(a: Tensor, b: Tensor) -> Tensor:
    """Norm ratio ``‖a‖ / ‖b‖`` of two tensors (Frobenius / flattened 2-norm).

    Args:
        a: a floating-point tensor.
        b: a floating-point tensor of the same shape.

    Returns:
        A 0-d tensor with the promoted dtype of ``a`` and ``b``.

    Raises:
        ValueError: if the shapes differ or ``b`` has zero norm.
        TypeError: if either tensor is not floating point.
    """
    out_dtype = _result_dtype(a, b, "norm_ratio")
    _check_shapes(a, b, "norm_ratio")
    work = _work_dtype(a, out_dtype)
    na = torch.linalg.vector_norm(a.reshape(-1).to(work))
    nb = torch.linalg.vector_norm(b.reshape(-1).to(work))
    if bool(nb == 0):
        raise ValueError("norm_ratio: tensor b has zero norm; the ratio is undefined")
    return (na / nb).to(out_dtype)
