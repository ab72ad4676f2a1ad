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


def _padded(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (…, sample, feature) with its padding (features NaN for every sample) set to 0,
    which changes no centred Gram matrix, and a mask of the entries (…) that still hold NaN
    (records that are missing, or NaN inside a representation)."""
    padding = np.isnan(x).all(axis=-2, keepdims=True)
    filled = np.where(padding, 0.0, x)
    broken = ~np.isfinite(filled).all(axis=(-2, -1))
    return np.where(np.isfinite(filled), filled, 0.0), broken


def centred_grams(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred Gram matrices X̃X̃ᵀ (…, sample, sample) of representations ``x`` (…, sample,
    feature), in float64, NaN-padded features ignored; and the mask of those that are undefined
    (a missing record: NaN beyond the padding)."""
    filled, broken = _padded(np.asarray(x, dtype=np.float64))
    centred = filled - filled.mean(axis=-2, keepdims=True)
    return centred @ np.swapaxes(centred, -1, -2), broken


def cka_from_grams(k: np.ndarray, l_: np.ndarray) -> np.ndarray:
    """Linear CKA ⟨K, L⟩_F / (‖K‖_F ‖L‖_F) of centred Gram matrices, broadcast over the leading
    axes; NaN where either is zero (a representation constant over samples)."""
    denominator = np.linalg.norm(k, axis=(-2, -1)) * np.linalg.norm(l_, axis=(-2, -1))
    numerator = np.sum(k * l_, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(denominator > 0, numerator / denominator, np.nan), 0.0, 1.0)


def _unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> np.ndarray:
    """The unbiased HSIC estimator (Song et al. 2012, eq. 5) of Gram matrices (…, n, n), n ≥ 4;
    centring is part of the estimator, so centred or raw Gram matrices give the same value."""
    n = k.shape[-1]
    eye = np.eye(n, dtype=bool)
    k, l_ = np.where(eye, 0.0, k), np.where(eye, 0.0, l_)
    trace = np.sum(k * l_, axis=(-2, -1))
    k_sum, l_sum = k.sum(axis=(-2, -1)), l_.sum(axis=(-2, -1))
    cross = np.sum(k.sum(axis=-1) * l_.sum(axis=-1), axis=-1)
    return (trace + k_sum * l_sum / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)) / (n * (n - 3))


def debiased_cka_from_grams(k: np.ndarray, l_: np.ndarray) -> np.ndarray:
    """Debiased linear CKA (Kornblith et al. 2019 with the unbiased HSIC of Song et al. 2012):
    linear CKA of few samples and many features is biased towards 1 (two unrelated Gaussian
    representations of 16 samples × 512 features give ≈ 0.97), the debiased one is ≈ 0 there.
    NaN for fewer than 4 samples or a constant representation; can be slightly negative."""
    if k.shape[-1] < 4:
        return np.full(k.shape[:-2], np.nan)
    hsic = _unbiased_hsic(k, l_)
    denominator = np.sqrt(np.clip(_unbiased_hsic(k, k) * _unbiased_hsic(l_, l_), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, hsic / denominator, np.nan)


def linear_cka_padded(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> np.ndarray:
    """:func:`linear_cka` broadcast over leading axes: ``x`` and ``y`` (…, sample, feature),
    features NaN for every sample are padding (ignored); NaN where a record is missing.
    ``debiased``: :func:`debiased_cka_from_grams` instead."""
    k, bad_k = centred_grams(x)
    l_, bad_l = centred_grams(y)
    value = debiased_cka_from_grams(k, l_) if debiased else cka_from_grams(k, l_)
    return np.where(bad_k | bad_l, np.nan, value)


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
