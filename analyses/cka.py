"""Linear CKA between hidden representations (Kornblith et al., 2019) — beyond the paper.

CKA(X, Y) = ‖X̃ᵀỸ‖²_F / (‖X̃ᵀX̃‖_F ‖ỸᵀỸ‖_F) for column-centred X̃, Ỹ (samples × features), computed
from the n × n Gram matrices (n = probe samples, usually far fewer than features), in float64.
It is 1 for representations equal up to rotation and isotropic scaling and near 0 for unrelated
ones; it compares layers of different widths.
"""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr


def _matrix(x: xr.DataArray | np.ndarray, sample_dim: str) -> np.ndarray:
    if isinstance(x, xr.DataArray):
        if sample_dim not in x.dims:
            raise ValueError(f"linear_cka: dims {x.dims} lack the sample dim {sample_dim!r}")
        x = x.transpose(sample_dim, ...).values
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 1:
        raise ValueError("linear_cka: need samples × features")
    return arr.reshape(arr.shape[0], -1)


def _centred_gram(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def linear_cka(
    X: xr.DataArray | np.ndarray, Y: xr.DataArray | np.ndarray, *, sample_dim: str = "sample"
) -> float:
    """Linear CKA of two representations of the same samples.

    Arrays: samples on axis 0, every other axis a feature. DataArrays: samples on ``sample_dim``,
    every other dim a feature. Returns a float in [0, 1]; NaN if either is constant over samples
    or holds NaN.
    """
    x, y = _matrix(X, sample_dim), _matrix(Y, sample_dim)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: {x.shape[0]} vs {y.shape[0]} samples")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    k, l_ = _centred_gram(x), _centred_gram(y)
    denominator = np.linalg.norm(k) * np.linalg.norm(l_)
    if denominator == 0:
        return float("nan")
    return float(np.clip(np.sum(k * l_) / denominator, 0.0, 1.0))


def cka_matrix(
    representations: xr.Dataset, *, dim: str = "rule", sample_dim: str = "sample"
) -> xr.DataArray:
    """Linear CKA between every pair along ``dim`` (e.g. the rules that learned them), per layer.

    ``representations``: one variable per layer (as :func:`alignment.analyses.representations.
    layer_outputs` returns, concatenated along ``dim``), each with dims (``dim``, sample, …).
    Returns ``cka`` with dims (layer, ``dim``, ``dim``_b); symmetric, 1 on the diagonal.
    """
    layers = list(representations.data_vars)
    labels = representations[dim].values
    values = np.full((len(layers), len(labels), len(labels)), np.nan)
    for li, layer in enumerate(layers):
        da = representations[layer]
        for i, j in itertools.combinations_with_replacement(range(len(labels)), 2):
            a = da.isel({dim: i}, drop=True)
            b = da.isel({dim: j}, drop=True)
            values[li, i, j] = values[li, j, i] = linear_cka(a, b, sample_dim=sample_dim)
    return xr.DataArray(
        values,
        dims=("layer", dim, f"{dim}_b"),
        coords={"layer": layers, dim: labels, f"{dim}_b": labels},
        name="cka",
        attrs={
            "long_name": "linear CKA",
            "units": "1",
            "description": "Linear centred kernel alignment of the layer outputs on the probe "
            f"batch, between every pair of {dim}s (Kornblith et al., 2019).",
        },
    )
