"""The network-dynamics analyses (issue 15): CKA invariances (property-based), CKA to BP paired by
seed with the probe batch checked, CKA across layers, effective rank on matrices of known rank,
the power-law fit of weight spectra against synthetic heavy tails and against ``powerlaw``, and
the gradient-noise summaries."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import ortho_group

from alignment import analyses as an
from alignment.analyses.cka import linear_cka, linear_cka_padded
from alignment.analyses.representation_dynamics import (
    cka_across_layers,
    cka_to_reference,
    effective_rank,
    participation_ratio,
)
from alignment.analyses.spectra import heavy_tail_exponent, power_law_fit
from alignment.recording.schema import VARIABLES
from tests.strategies import seeds
from tests.synthetic import synthetic_run

# ------------------------------------------------------------------------------ strategies
shapes = st.tuples(st.integers(3, 10), st.integers(1, 8))
"""(samples, features) of a representation."""
scales = st.floats(min_value=1e-3, max_value=1e3)


def representation(seed: int, samples: int, features: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(samples, features))


def orthogonal(seed: int, n: int) -> np.ndarray:
    return np.array([[1.0]]) if n == 1 else ortho_group.rvs(n, random_state=seed)


# ------------------------------------------------------------------------------ CKA invariances
@given(shape=shapes, seed=seeds)
def test_cka_of_a_representation_with_itself_is_one(shape: tuple[int, int], seed: int) -> None:
    x = representation(seed, *shape)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert float(linear_cka_padded(x, x)) == pytest.approx(1.0, abs=1e-12)


@given(shape=shapes, width=st.integers(1, 8), seed=seeds, scale=scales)
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(
    shape: tuple[int, int], width: int, seed: int, scale: float
) -> None:
    samples, features = shape
    x = representation(seed, samples, features)
    y = representation(seed + 1, samples, width)
    q = orthogonal(seed % 2**31, features)
    reference = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert linear_cka(scale * x, y) == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert linear_cka(x, y / scale) == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert float(linear_cka_padded(x @ q * scale, y)) == pytest.approx(reference, rel=1e-9)


@given(shape=shapes, pad=st.integers(1, 4), seed=seeds)
def test_nan_padding_of_features_changes_no_cka(shape: tuple[int, int], pad: int, seed: int):
    """Layers of different widths share one ``feature`` dim, NaN-padded: the padding is ignored;
    a missing record (NaN everywhere) gives NaN."""
    x = representation(seed, *shape)
    y = representation(seed + 1, *shape)
    padded = np.concatenate([x, np.full((shape[0], pad), np.nan)], axis=1)
    assert float(linear_cka_padded(padded, y)) == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert np.isnan(linear_cka_padded(np.full_like(padded, np.nan), y))


@given(shape=st.tuples(st.integers(4, 10), st.integers(1, 8)), seed=seeds, scale=scales)
def test_debiased_cka_keeps_the_invariances(shape: tuple[int, int], seed: int, scale: float):
    x = representation(seed, *shape)
    q = orthogonal(seed % 2**31, shape[1])
    value = float(linear_cka_padded(x, scale * x @ q + 1.0, debiased=True))
    assert value == pytest.approx(1.0, rel=1e-9)


def test_debiased_cka_of_unrelated_wide_representations_is_near_zero() -> None:
    """200 pairs of independent Gaussian representations, 16 samples × 512 features (the demo's
    probe and width): linear CKA ≈ 0.97 (its bias), debiased CKA 0 on average; the bound 0.04 is
    6 standard errors of the mean (sd over pairs ≈ 0.09, seeded)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 200, 16, 512))
    assert float(np.mean(linear_cka_padded(x, y))) > 0.9
    assert abs(float(np.mean(linear_cka_padded(x, y, debiased=True)))) < 0.04
    assert np.isnan(linear_cka_padded(x[0, :3], y[0, :3], debiased=True))


# ------------------------------------------------------------------------------ effective rank
def _isotropic(seed: int, samples: int, features: int, rank: int, scale: float) -> np.ndarray:
    """A centred representation spread evenly over ``rank`` orthogonal directions."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(np.column_stack([np.ones(samples), rng.normal(size=(samples, rank))]))
    u = basis[:, 1 : rank + 1]  # orthonormal and orthogonal to the ones vector: centred
    v, _ = np.linalg.qr(rng.normal(size=(features, rank)))
    return scale * u @ v.T


def _rank_of(x: np.ndarray) -> float:
    return float(participation_ratio(x))


@given(
    samples=st.integers(3, 12), extra=st.integers(0, 5), data=st.data(), seed=seeds, scale=scales
)
def test_effective_rank_of_an_isotropic_rank_r_representation_is_r(
    samples: int, extra: int, data: st.DataObject, seed: int, scale: float
) -> None:
    rank = data.draw(st.integers(1, samples - 1), label="rank")
    x = _isotropic(seed, samples, rank + extra, rank, scale)
    assert _rank_of(x) == pytest.approx(rank, rel=1e-9)


@given(eigenvalues=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=6), seed=seeds)
def test_effective_rank_is_the_participation_ratio_of_the_covariance(
    eigenvalues: list[float], seed: int
) -> None:
    rank = len(eigenvalues)
    x = _isotropic(seed, rank + 3, rank + 2, rank, 1.0)
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    x = u[:, :rank] @ np.diag(np.sqrt(eigenvalues)) @ vt[:rank]
    lam = np.asarray(eigenvalues)
    assert _rank_of(x) == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-9)
    assert 1 - 1e-9 <= _rank_of(x) <= rank + 1e-9


# ------------------------------------------------------------------------------ CKA to BP
@pytest.fixture(scope="module")
def runs() -> xr.Dataset:
    return an.combine(
        [synthetic_run(r, s, dynamics=True, samples=8) for r in ("bp", "fa", "pfa") for s in (0, 1)]
    )


def test_cka_to_bp_pairs_each_run_with_the_bp_run_of_its_seed(runs: xr.Dataset) -> None:
    """fa seed 1 is made BP seed 1's representation, rotated and scaled: CKA 1 at every probe
    record, which a pairing with another seed (or another step) would not give."""
    grid = an.as_combined(runs)
    act = grid["activation"].copy()
    bp1 = act.sel(rule="bp", seed=1).values
    rotated = bp1.copy()
    for layer, width in enumerate((8, 6, 3)):  # each layer's own width; NaN padding beyond it
        q = ortho_group.rvs(width, random_state=layer)
        rotated[:, layer, :, :width] = 3.0 * bp1[:, layer, :, :width] @ q
    act.loc[{"rule": "fa", "seed": 1}] = rotated
    cka = cka_to_reference(grid.assign(activation=act))["cka_to_bp"]
    assert cka.dims == ("rule", "seed", "step", "layer")
    assert cka.attrs["long_name"] == "CKA to BP" and cka.attrs["units"] == "1"
    probe = cka["step"].values[np.isfinite(cka.sel(rule="bp", seed=0).values).all(-1)]
    assert 3 <= probe.size < cka.sizes["step"]  # the probe schedule; NaN elsewhere
    assert np.isnan(cka.drop_sel(step=probe)).all()
    at_probe = cka.sel(step=probe)
    np.testing.assert_allclose(at_probe.sel(rule="fa", seed=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(at_probe.sel(rule="bp"), 1.0, rtol=1e-12)
    assert float(at_probe.sel(rule="fa", seed=0).max()) < 0.999
    step = int(probe[-1])
    at = grid.sel(step=step, layer="fc2")["activation"]
    fc2_width = 6
    expected = linear_cka(
        at.sel(rule="pfa", seed=0).values[:, :fc2_width],
        at.sel(rule="bp", seed=0).values[:, :fc2_width],
    )
    got = float(cka.sel(rule="pfa", seed=0, step=step, layer="fc2"))
    assert got == pytest.approx(expected, rel=1e-12)


def test_cka_to_bp_refuses_runs_with_another_probe_batch(runs: xr.Dataset) -> None:
    grid = an.as_combined(runs)
    probe = grid["probe_input"].copy()
    probe.loc[{"rule": "pfa", "seed": 1}] = probe.sel(rule="pfa", seed=1).values + 1.0
    with pytest.raises(ValueError, match="PFA run of seed 1 has a different probe batch"):
        cka_to_reference(grid.assign(probe_input=probe))


def test_cka_to_bp_says_what_is_missing(runs: xr.Dataset) -> None:
    no_bp = an.combine([synthetic_run(r, 0, dynamics=True) for r in ("fa", "pfa")])
    with pytest.raises(ValueError, match="no 'bp' run among the runs"):
        cka_to_reference(no_bp)
    with pytest.raises(ValueError, match=r"record.dynamics: \[representations\]"):
        cka_to_reference(an.combine([synthetic_run(r, 0) for r in ("bp", "fa")]))
    with pytest.raises(ValueError, match="probe_input"):
        cka_to_reference(runs.drop_vars("probe_input"))


def test_cka_across_layers_is_a_symmetric_matrix_with_unit_diagonal(runs: xr.Dataset) -> None:
    cka = cka_across_layers(runs)["cka_layers"]
    final = an.last_finite(cka).sel(rule="pfa", seed=1)
    np.testing.assert_allclose(final.values, final.values.T, rtol=1e-12)
    np.testing.assert_allclose(np.diag(final.values), 1.0, rtol=1e-12)
    act = an.last_finite(an.as_combined(runs)["activation"]).sel(rule="pfa", seed=1)
    expected = linear_cka(act.sel(layer="fc1").values[:, :8], act.sel(layer="fc3").values[:, :3])
    assert float(final.sel(layer="fc1", layer_b="fc3")) == pytest.approx(expected, rel=1e-12)


def test_the_analyses_of_lazy_runs_equal_the_eager_ones(runs: xr.Dataset) -> None:
    lazy = runs.chunk({"run": 1})
    for function, name in (
        (cka_to_reference, "cka_to_bp"),
        (effective_rank, "effective_rank"),
        (heavy_tail_exponent, "alpha"),
    ):
        result = function(lazy)[name]
        assert result.chunks is not None, name
        xr.testing.assert_allclose(result.compute(), function(runs)[name])


# ------------------------------------------------------------------------------ power law
def _pareto(rng: np.random.Generator, alpha: float, n: int, xmin: float = 1.0) -> np.ndarray:
    return xmin * (1 - rng.random(n)) ** (-1 / (alpha - 1))


@pytest.mark.parametrize("alpha", [1.5, 2.0, 2.5, 3.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_law_fit_recovers_the_exponent_of_a_heavy_tail_above_a_bulk(
    alpha: float, seed: int
) -> None:
    """1,500 Pareto(α) values above 1 and a bulk of 500 uniform on [0.2, 1]: the fit finds the
    tail and recovers α within 5 standard errors of the estimator, (α − 1)/√n_tail (Clauset et
    al. 2009, eq. 3.2): a false failure has probability below 1e-6."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([_pareto(rng, alpha, 1500), rng.uniform(0.2, 1.0, 500)])
    fit = power_law_fit(values)
    assert abs(fit.alpha - alpha) <= 5 * (fit.alpha - 1) / np.sqrt(fit.n_tail), fit
    assert fit.xmin >= 0.9  # the tail starts where the power law does, not in the bulk


def _with_spectrum(eigenvalues: np.ndarray, rng: np.random.Generator, width: int) -> np.ndarray:
    """A matrix (len(eigenvalues) × width) whose WᵀW has exactly these non-zero eigenvalues."""
    n = eigenvalues.size
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v, _ = np.linalg.qr(rng.normal(size=(width, n)))
    return u @ np.diag(np.sqrt(eigenvalues)) @ v.T


def _weight_sv(*matrices: np.ndarray) -> xr.Dataset:
    """A synthetic run of three layers whose recorded ``weight_sv`` are these matrices'."""
    svs = [np.linalg.svd(w, compute_uv=False) for w in matrices]
    run = synthetic_run("bp", dynamics=True).drop_vars(["weight_sv", "feedback_sv"])
    values = np.full((run.sizes["step"], len(svs), max(s.size for s in svs)), np.nan)
    for i, s in enumerate(svs):
        values[0, i, : s.size] = s  # the first record; NaN at the others
    attrs = VARIABLES["weight_sv"].attrs
    return run.drop_vars("feedback_target_sv").assign(
        weight_sv=(("step", "layer", "rank"), values, attrs)
    )


@pytest.mark.parametrize("alpha", [2.0, 3.0])
def test_heavy_tail_exponent_recovers_the_esd_exponent_of_synthetic_matrices(alpha: float):
    """W = U diag(√λ) Vᵀ with λ ~ Pareto(α) (400 × 600, seeded): α of WᵀW's spectrum within 5
    standard errors; W with i.i.d. Cauchy entries (tail index μ = 1): the ESD tail of a Lévy
    matrix has α = 1 + μ/2 = 1.5 (Martin & Mahoney 2021, §3), within 0.15 (seeded; finite size
    moves it by up to 0.08 over seeds 0–5); a 10-output classifier has too few values: NaN."""
    rng = np.random.default_rng(7)
    pareto = _with_spectrum(_pareto(rng, alpha, 400), rng, 600)
    cauchy = rng.standard_cauchy((300, 500))
    classifier = rng.normal(size=(10, 400))
    fits = heavy_tail_exponent(_weight_sv(pareto, cauchy, classifier)).isel(rule=0, seed=0, step=0)
    found, tail = float(fits["alpha"][0]), float(fits["alpha_tail"][0])
    assert abs(found - alpha) <= 5 * (found - 1) / np.sqrt(tail), (found, tail)
    assert float(fits["alpha"][1]) == pytest.approx(1.5, abs=0.15)
    assert np.isnan(float(fits["alpha"][2]))
    assert fits["alpha"].attrs["long_name"] == "heavy-tail exponent α"


def test_power_law_fit_is_the_estimator_of_the_powerlaw_package() -> None:
    """The same α, λ_min and KS distance as ``powerlaw.Fit`` (its α bound of 3 lifted) on a
    Pareto sample, a mixture, a Gaussian (Marchenko–Pastur) and a Student-t weight spectrum."""
    powerlaw = pytest.importorskip("powerlaw")
    rng = np.random.default_rng(1)
    cases = [
        _pareto(rng, 2.5, 400),
        np.concatenate([_pareto(rng, 2.2, 300, 2.0), rng.uniform(0.1, 2.0, 200)]),
        np.linalg.svd(rng.standard_normal((200, 300)), compute_uv=False) ** 2,
        np.linalg.svd(rng.standard_t(3, (200, 300)), compute_uv=False) ** 2,
    ]
    for values in cases:
        mine = power_law_fit(values)
        with warnings.catch_warnings():  # powerlaw 2.0 warns about its own deprecated names
            warnings.simplefilter("ignore")
            theirs = powerlaw.Fit(values, verbose=False, parameter_ranges={"alpha": [0, None]})
            expected = (theirs.alpha, theirs.xmin, theirs.D)
        np.testing.assert_allclose(mine[:3], expected, rtol=1e-9)


def test_power_law_fit_of_too_few_values_is_nan() -> None:
    assert np.isnan(power_law_fit(np.array([1.0, 2.0])).alpha)
    assert np.isnan(power_law_fit(np.array([np.nan, 0.0, -1.0, 3.0])).alpha)


# ------------------------------------------------------------------------------ gradient noise
def test_gradient_noise_summary_reduces_the_per_sample_angles(runs: xr.Dataset) -> None:
    summary = an.gradient_noise_summary(runs)
    angle = an.as_combined(runs)["sample_grad_angle"]
    np.testing.assert_allclose(
        summary["sample_grad_angle_quantile"].sel(quantile=0.5).values,
        angle.median("sample", skipna=False).values,
    )
    np.testing.assert_allclose(
        summary["sample_grad_angle_std"].values, angle.std("sample", ddof=1).values
    )
    assert summary["sample_grad_angle_mean"].attrs["units"] == "deg"
    final = an.final_gradient_noise(runs)
    assert final["grad_snr"].dims == ("rule", "seed", "layer")
    last = int(np.flatnonzero(np.isfinite(angle.sel(rule="fa", seed=0, layer="fc1")[:, 0]))[-1])
    np.testing.assert_array_equal(
        final["sample_grad_angle"].sel(rule="fa", seed=0).values,
        angle.sel(rule="fa", seed=0).isel(step=last).values,
    )
    with pytest.raises(ValueError, match=r"record.dynamics: \[gradient_noise\]"):
        an.gradient_noise_summary(synthetic_run("bp"))
