"""Fig. 3: alignment and the spectrum of B·Bᵀ against the expansion ratio k (and the density ρ).

A Monte-Carlo study (:func:`alignment.theory.monte_carlo_alignment`: batched over draws, one
seeded generator per k) with the closed forms of the theory beside it as variables, and PFA-o
(orthogonal B, k = 1) as the exact reference: angle 0, every eigenvalue 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from alignment import theory

PAPER_K = np.logspace(0, 2, 11)
"""k ∈ logspace(0, 2, 11): 1 … 100 (the paper's Fig. 3)."""

_ATTRS = {
    "k": ("expansion ratio k", "1", "N_mid/N_out requested (N_mid = round(k·N_out))."),
    "density": ("feedback density ρ", "1", "Bernoulli(ρ) density of the masks on B and R."),
    "eigenvalues": ("eigenvalues of B·Bᵀ", "1", "Per draw, ascending (Monte Carlo)."),
    "angle": (
        "angle(W, B·Bᵀ·W)",
        "deg",
        "Per draw: the angle between W and the fixed-point feedback B·Bᵀ·W (Monte Carlo).",
    ),
    "norm_ratio": ("‖B·Bᵀ·W‖/‖W‖", "1", "Per draw: the fixed-point norm ratio (Monte Carlo)."),
    "path_angle": (
        "path alignment",
        "deg",
        "Per draw: angle(W, B·(P⊙BᵀW)) with R's density-ρ mask P (= angle when ρ = 1).",
    ),
    "path_norm_ratio": ("path norm ratio", "1", "Per draw: ‖B·(P⊙BᵀW)‖/‖W‖ (Monte Carlo)."),
    "expected_angle": (
        "expected angle(W, B·Bᵀ·W)",
        "deg",
        "Closed form with the finite-size term: cos θ = 1/√E[λ²], "
        "E[λ²] = 1 + (N_out−1)/N_mid + (κ/ρ−1)/N_mid (theory property 4).",
    ),
    "expected_angle_limit": (
        "expected angle, large size",
        "deg",
        "cos θ = √(k/(k+1)): 45.00°, 17.55°, 5.71° at k = 1, 10, 100 (theory property 4).",
    ),
    "expected_path_angle": (
        "expected path alignment",
        "deg",
        "Closed form with masks on B and R, finite size (theory property 5).",
    ),
    "expected_norm_ratio": (
        "expected ‖B·Bᵀ·W‖/‖W‖",
        "1",
        "√E[λ²] with the finite-size term; √(1 + 1/k) for large sizes (theory property 4).",
    ),
    "mp_mean": ("Marchenko–Pastur mean", "1", "Mean eigenvalue of B·Bᵀ: 1 (theory property 3)."),
    "mp_variance": ("Marchenko–Pastur variance", "1", "Eigenvalue variance 1/k (theory prop. 3)."),
    "mp_low": ("Marchenko–Pastur lower edge", "1", "(1 − 1/√k)² (theory property 3)."),
    "mp_high": ("Marchenko–Pastur upper edge", "1", "(1 + 1/√k)² (theory property 3)."),
    "pfa_o_angle": (
        "PFA-o angle(W, B·Bᵀ·W)",
        "deg",
        "Orthogonal B (k = 1): per draw, exactly 0 up to rounding (Monte Carlo).",
    ),
    "pfa_o_eigenvalues": (
        "PFA-o eigenvalues of B·Bᵀ",
        "1",
        "Orthogonal B (k = 1): per draw, exactly 1 up to rounding (Monte Carlo).",
    ),
}


def _var(name: str, dims: tuple[str, ...], values: np.ndarray) -> xr.Variable:
    long_name, units, description = _ATTRS[name]
    return xr.Variable(
        dims, values, {"long_name": long_name, "units": units, "description": description}
    )


def _monte_carlo(ks: np.ndarray, rhos: list[float], **options: int) -> dict[str, np.ndarray]:
    per_rho = [theory.monte_carlo_alignment(ks, density=rho, **options) for rho in rhos]
    keys = ("eigenvalues", "angle", "norm_ratio", "path_angle", "path_norm_ratio")
    return {key: np.stack([r[key] for r in per_rho], axis=1) for key in keys}


def expansion_study(
    *,
    k: Sequence[float] | np.ndarray = PAPER_K,
    density: float | Sequence[float] = 1.0,
    n_out: int = 100,
    n_in: int = 256,
    draws: int = 100,
    seed: int = 0,
) -> xr.Dataset:
    """The Fig. 3 Monte-Carlo study over ``k`` (and ``density`` when it is a sequence).

    Dims ``k`` [, ``density``], ``draw``, ``eig``. Monte-Carlo variables: ``eigenvalues``,
    ``angle``, ``norm_ratio``, ``path_angle``, ``path_norm_ratio``; closed forms beside them:
    ``expected_angle`` (finite-size term, uniform entries), ``expected_angle_limit``,
    ``expected_path_angle``, ``expected_norm_ratio``, ``mp_mean``, ``mp_variance``, ``mp_low``,
    ``mp_high``; the PFA-o reference: ``pfa_o_angle`` and ``pfa_o_eigenvalues`` (per draw).
    Seeded: the same arguments give the same Dataset.
    """
    ks = np.asarray(k, dtype=float)
    sweep = not np.isscalar(density)
    rhos = [float(r) for r in np.atleast_1d(np.asarray(density, dtype=float))]
    options = {"n_out": n_out, "n_in": n_in, "draws": draws, "seed": seed}
    mc = _monte_carlo(ks, rhos, **options)
    orthogonal = theory.monte_carlo_alignment(1.0, b_init="orthogonal", **options)
    kk, rr = np.meshgrid(ks, rhos, indexing="ij")
    mp = theory.marchenko_pastur(ks)
    grid = ("k", "density")
    expected = {
        "expected_angle": theory.expected_angle(kk, rr, n_out, r_masked=False),
        "expected_angle_limit": theory.expected_angle(kk + 0 * rr),
        "expected_path_angle": theory.expected_angle(kk, rr, n_out),
        "expected_norm_ratio": theory.expected_norm_ratio(kk, rr, n_out, r_masked=False),
    }
    ds = xr.Dataset(
        {
            "eigenvalues": _var("eigenvalues", (*grid, "draw", "eig"), mc["eigenvalues"]),
            **{n: _var(n, (*grid, "draw"), mc[n]) for n in list(_ATTRS)[3:7]},
            **{n: _var(n, grid, np.asarray(v)) for n, v in expected.items()},
            "mp_mean": _var("mp_mean", ("k",), np.asarray(mp.mean)),
            "mp_variance": _var("mp_variance", ("k",), np.asarray(mp.variance)),
            "mp_low": _var("mp_low", ("k",), np.asarray(mp.support_low)),
            "mp_high": _var("mp_high", ("k",), np.asarray(mp.support_high)),
            "pfa_o_angle": _var("pfa_o_angle", ("draw",), orthogonal["angle"]),
            "pfa_o_eigenvalues": _var(
                "pfa_o_eigenvalues", ("draw", "eig"), orthogonal["eigenvalues"]
            ),
        },
        coords={
            "k": xr.Variable(
                "k", ks, dict(zip(("long_name", "units", "description"), _ATTRS["k"], strict=True))
            ),
            "density": xr.Variable(
                "density",
                rhos,
                dict(zip(("long_name", "units", "description"), _ATTRS["density"], strict=True)),
            ),
            "draw": np.arange(draws),
        },
        attrs={
            "n_out": n_out,
            "n_in": n_in,
            "draws": draws,
            "seed": seed,
            "kappa": theory.KAPPA_UNIFORM,
        },
    )
    return ds if sweep else ds.squeeze("density")


def expansion_summary(study: xr.Dataset) -> xr.Dataset:
    """Mean and standard deviation over draws (eigenvalues: pooled over draws and eigenvalues,
    as in the paper's Fig. 3) of the Monte-Carlo variables, with the closed forms kept."""
    out = {}
    for name, dims in (
        ("eigenvalues", ["draw", "eig"]),
        ("angle", ["draw"]),
        ("norm_ratio", ["draw"]),
        ("path_angle", ["draw"]),
        ("path_norm_ratio", ["draw"]),
        ("pfa_o_angle", ["draw"]),
        ("pfa_o_eigenvalues", ["draw", "eig"]),
    ):
        da = study[name]
        for stat in ("mean", "std"):
            reduced = getattr(da, stat)(dims)
            reduced.attrs = {
                **da.attrs,
                "long_name": f"{da.attrs['long_name']}" + (" (std)" if stat == "std" else ""),
                "description": f"{stat} over {' and '.join(dims)}: {da.attrs['description']}",
            }
            out[f"{name}_{stat}"] = reduced
    closed = [n for n in study.data_vars if n.startswith(("expected_", "mp_"))]
    result = xr.Dataset(out).assign({n: study[n] for n in closed})
    result.attrs = dict(study.attrs)
    return result
