"""Weight and feedback spectra over training (beyond the paper): the heavy-tail exponent α of W's
empirical spectral density, and the recorded singular values at chosen records.

The empirical spectral density (ESD) of a layer is the distribution of the eigenvalues of WᵀW/N,
the squared singular values ``weight_sv`` (``record.dynamics: [spectra]``) up to the factor 1/N,
which changes no exponent. Its tail is fitted with a continuous power law p(λ) ∝ λ^−α for
λ ≥ λ_min by maximum likelihood, λ_min chosen to minimise the Kolmogorov–Smirnov distance between
the tail and the fit (Clauset, Shalizi & Newman 2009, SIAM Review 51:661, §3), as weight-spectrum
analyses do (Martin & Mahoney 2021, JMLR 22:165): α near 2 marks a heavy-tailed, well-trained
layer; a random (Marchenko–Pastur) layer has no power-law tail and gives a large α.

:func:`power_law_fit` is the estimator of the ``powerlaw`` package (``powerlaw.Fit`` with its
defaults: every distinct value but the largest a candidate λ_min, empirical CDF i/n), written
with numpy arrays instead of one Python object per candidate: the same α, λ_min and KS distance
(``tests/test_dynamics_analyses.py`` checks it against ``powerlaw.Fit(values,
parameter_ranges={"alpha": [0, None]})``) in 1–10 ms instead of 0.4 s for 512 eigenvalues, which
is what lets ``make demo`` fit every layer at every probe record. Unlike ``powerlaw``'s default,
α is not bounded above by 3: a random layer's large α is what tells it apart.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import xarray as xr

from alignment.analyses._common import label_step_coords, select_variables
from alignment.analyses.runs import as_combined

SPECTRA = ("weight_sv", "feedback_sv", "feedback_target_sv")
MIN_EIGENVALUES = 32
"""Layers with fewer non-zero singular values get no exponent (NaN): too few for a tail."""
BLOCK = 256
"""Candidate λ_min values evaluated at once (memory BLOCK × number of eigenvalues)."""
NOT_RECORDED = (
    "the runs did not record weight_sv (set record.dynamics: [spectra], or "
    "Recorder(dynamics=['spectra']))"
)


class PowerLawFit(NamedTuple):
    """A power-law fit of a tail: exponent α, its start λ_min, the KS distance of the fit and the
    number of values in the tail (NaN everywhere when there are too few values)."""

    alpha: float
    xmin: float
    ks_distance: float
    n_tail: float


NO_FIT = PowerLawFit(np.nan, np.nan, np.nan, np.nan)


def power_law_fit(values: np.ndarray, *, min_tail: int = 2) -> PowerLawFit:
    """Maximum-likelihood continuous power law with λ_min at the minimum KS distance (Clauset et
    al. 2009): for each candidate λ_min (every distinct value but the largest, with at least
    ``min_tail`` values from it on), α = 1 + n / Σ ln(x_i/λ_min) over the n values x_i ≥ λ_min
    and D = max |F_emp − F_fit| over them (F_emp = i/n, F_fit = 1 − (x/λ_min)^(1−α)); the
    candidate with the smallest D wins. NaN and non-positive values are dropped."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = np.sort(x[np.isfinite(x) & (x > 0)])
    n = x.size
    distinct, first = np.unique(x, return_index=True)
    candidates = first[:-1]
    candidates = candidates[n - candidates >= max(min_tail, 2)]
    if distinct.size < 3 or candidates.size < 1:
        return NO_FIT
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # Σ_{j ≥ i} ln x_j
    n_tail = n - candidates
    with np.errstate(divide="ignore"):
        alpha = 1.0 + n_tail / (suffix[candidates] - n_tail * logs[candidates])
    distance = np.empty(candidates.size)
    index = np.arange(n)
    for start in range(0, candidates.size, BLOCK):
        i = candidates[start : start + BLOCK, None]
        a = alpha[start : start + BLOCK, None]
        tail = index[None, :] >= i
        ratio = np.where(tail, logs[None, :] - logs[i[:, 0]][:, None], 0.0)
        theory = 1.0 - np.exp((1.0 - a) * ratio)
        empirical = (index[None, :] - i) / (n - i)
        distance[start : start + BLOCK] = np.where(tail, np.abs(empirical - theory), 0.0).max(1)
    distance = np.where(np.isfinite(alpha), distance, np.inf)
    best = int(np.argmin(distance))
    if not np.isfinite(distance[best]):
        return NO_FIT
    return PowerLawFit(
        float(alpha[best]), float(x[candidates[best]]), float(distance[best]), float(n_tail[best])
    )


def _fit_rows(sv: np.ndarray, min_eigenvalues: int) -> np.ndarray:
    """(…, rank) singular values → (…, 4): α, λ_min, KS distance, tail size of sv²."""
    flat = sv.reshape(-1, sv.shape[-1])
    out = np.full((flat.shape[0], 4), np.nan)
    for row, values in enumerate(flat):
        eigenvalues = values[np.isfinite(values) & (values > 0)] ** 2
        if eigenvalues.size >= min_eigenvalues:
            out[row] = power_law_fit(eigenvalues)
    return out.reshape(*sv.shape[:-1], 4)


FIT_VARIABLES = {
    "alpha": (
        "heavy-tail exponent α",
        "1",
        "Exponent α of a power law p(λ) ∝ λ^−α fitted to the tail λ ≥ λ_min of the eigenvalues "
        "λ of WᵀW (maximum likelihood, λ_min at the minimum KS distance; Clauset et al. 2009).",
    ),
    "alpha_xmin": (
        "tail start λ_min",
        "1",
        "Smallest eigenvalue of WᵀW (squared singular value) in the fitted tail.",
    ),
    "alpha_ks_distance": (
        "KS distance of the power-law fit",
        "1",
        "Kolmogorov–Smirnov distance between the tail's empirical CDF and the fitted power law.",
    ),
    "alpha_tail": ("eigenvalues in the tail", "1", "Number of eigenvalues λ ≥ λ_min."),
}


def heavy_tail_exponent(
    ds: xr.Dataset, *, variable: str = "weight_sv", min_eigenvalues: int = MIN_EIGENVALUES
) -> xr.Dataset:
    """The power-law fit of each layer's ESD (the squared ``variable``, default ``weight_sv``) at
    every record that holds it: ``alpha``, ``alpha_xmin``, ``alpha_ks_distance``, ``alpha_tail``
    (run dims…, step, layer). Layers with fewer than ``min_eigenvalues`` singular values (a
    classifier with 10 outputs) are NaN. One run, a run stack or a grid; lazy runs stay lazy."""
    if variable not in ds:
        raise ValueError(f"heavy_tail_exponent: {NOT_RECORDED.replace('weight_sv', variable)}")
    ds = as_combined(select_variables(ds, [variable]))
    fits = xr.apply_ufunc(
        _fit_rows,
        ds[variable],
        kwargs={"min_eigenvalues": min_eigenvalues},
        input_core_dims=[["rank"]],
        output_core_dims=[["fit_"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"allow_rechunk": True, "output_sizes": {"fit_": 4}},
    )
    out = xr.Dataset()
    for i, (name, (long_name, units, description)) in enumerate(FIT_VARIABLES.items()):
        out[name] = fits.isel(fit_=i, drop=True).assign_attrs(
            long_name=long_name, units=units, description=description
        )
    out.attrs = {"variable": variable, "run_dims": ds.attrs.get("run_dims", "[]")}
    return label_step_coords(out)
