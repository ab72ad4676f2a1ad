"""Tests of the closed forms in alignment.theory and of the metrics in alignment.metrics.

Monte-Carlo comparisons use tolerances of 6 standard errors of the mean (estimated from the
draws themselves, 50–100 draws) plus a stated allowance for terms the closed form neglects. For a
mean of n ≥ 50 draws the studentised error exceeds 6 with probability < 1e-6 (Student t with 49
degrees of freedom: 2·P(t > 6) ≈ 2e-7; with 99: 3e-8), so a change of seed would fail a correct
implementation with probability below 1e-6 per comparison. All seeds are fixed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import integrate

from alignment import theory
from alignment.metrics import angle, angle_rows, norm_ratio

N_OUT, N_IN = 100, 256
SE_FACTOR = 6.0  # see module docstring: false-failure probability < 1e-6 per comparison


def _mean_and_se(x: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error."""
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run this module on one intra-op thread, restoring the setting afterwards.

    The tensors here are small; on a busy 2-core machine two OpenMP threads spin-waiting on each
    other made the Monte Carlo 5–50x slower than one thread (measured 20–90 s vs ~1 s).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mc_dense() -> dict[str, np.ndarray]:
    """Dense Monte Carlo at the spec's Fig. 3 sizes: N_out = 100, N_in = 256, 100 draws."""
    return theory.monte_carlo_alignment([1.0, 3.0, 10.0], n_out=N_OUT, n_in=N_IN, draws=100)


# ------------------------------------------------------------------------------------------
# Closed forms at the documented values
# ------------------------------------------------------------------------------------------


def test_expected_angle_dense_large_size_values() -> None:
    angles = theory.expected_angle(np.array([1.0, 10.0, 100.0]))
    np.testing.assert_allclose(angles, [45.00, 17.55, 5.71], atol=0.005)
    assert theory.expected_angle(10) == pytest.approx(math.degrees(math.acos(math.sqrt(10 / 11))))


def test_expected_norm_ratio_values() -> None:
    assert theory.expected_norm_ratio(10) == pytest.approx(1.049, abs=5e-4)
    assert theory.expected_norm_ratio(10) == pytest.approx(math.sqrt(1.1))
    rho = np.array([0.5, 0.1, 0.05])
    np.testing.assert_allclose(
        theory.expected_norm_ratio(10, rho), rho * np.sqrt(1 + 1 / (rho * 10)), rtol=1e-12
    )
    # A mask on B alone does not change the large-size ratio (only R's mask thins the path).
    assert theory.expected_norm_ratio(10, 0.1, r_masked=False) == pytest.approx(math.sqrt(1.1))


def test_sparse_large_size_formula() -> None:
    rho = np.array([1.0, 0.5, 0.3, 0.17, 0.1, 0.05])
    expected = np.degrees(np.arccos(1 / np.sqrt(1 + 1 / (rho * 10))))
    np.testing.assert_allclose(theory.expected_angle(10, rho), expected, rtol=1e-12)


def test_spec_sparse_values_are_finite_size_at_n_out_100() -> None:
    """The paper's sparse-feedback simulation values (theory property 5) are reproduced by the
    finite-size form at N_out = 100."""
    rho = np.array([1.0, 0.5, 0.3, 0.17, 0.1, 0.05])
    spec = np.array([17.55, 24.23, 30.53, 38.74, 47.26, 58.65])
    finite = theory.expected_angle(10, rho, n_out=100)
    np.testing.assert_allclose(finite, spec, atol=0.1)
    # The large-size form misses them by up to ~4° at low density.
    large = theory.expected_angle(10, rho)
    assert spec[-1] - large[-1] > 3.5


def test_dense_finite_size_formula() -> None:
    n_mid = 10 * N_OUT
    second = 1 + (N_OUT - 1) / n_mid + (theory.KAPPA_UNIFORM - 1) / n_mid
    assert theory.eigenvalue_second_moment(10, n_out=N_OUT) == pytest.approx(second)
    expected = math.degrees(math.acos(1 / math.sqrt(second)))
    assert theory.expected_angle(10, n_out=N_OUT, n_in=N_IN) == pytest.approx(expected)
    # Dense: path moments reduce to (1, E[λ²]); large-size limit 1 + 1/k.
    assert theory.path_moments(10, 1.0, N_OUT) == pytest.approx((1.0, second))
    assert theory.eigenvalue_second_moment(10) == pytest.approx(1.1)


def test_initial_path_norm_ratio_mnist_layers() -> None:
    ratios = theory.initial_path_norm_ratio([784, 512, 512], [512, 512, 10], 10)
    np.testing.assert_allclose(ratios, [0.469, 0.426, 0.924], atol=5e-4)
    assert theory.initial_path_norm_ratio(300, 200, 1) == pytest.approx(1.0)


def test_initial_angles() -> None:
    assert theory.usf_initial_angle() == pytest.approx(30.0, abs=1e-12)
    assert theory.usf_initial_angle("uniform") == pytest.approx(30.0, abs=1e-12)
    gaussian = theory.usf_initial_angle("gaussian")
    assert gaussian == pytest.approx(math.degrees(math.acos(math.sqrt(2 / math.pi))))
    assert gaussian == pytest.approx(37.0, abs=0.1)
    assert theory.fa_initial_angle() == 90.0
    with pytest.raises(ValueError, match="distribution"):
        theory.usf_initial_angle("laplace")


def test_usf_initial_angle_matches_sampled_weights() -> None:
    gen = torch.Generator().manual_seed(3)
    w_uniform = torch.rand(400, 500, generator=gen, dtype=torch.float64) * 2 - 1
    w_gauss = torch.randn(400, 500, generator=gen, dtype=torch.float64)
    for w, dist in ((w_uniform, "uniform"), (w_gauss, "gaussian")):
        measured = float(angle(w, torch.sign(w)))
        assert measured == pytest.approx(theory.usf_initial_angle(dist), abs=0.1)


def test_expected_angle_decreases_in_k() -> None:
    ks = np.logspace(0, 2, 11)
    for n_out in (None, N_OUT):
        values = theory.expected_angle(ks, n_out=n_out)
        assert np.all(np.diff(values) < 0)
    for rho in (0.5, 0.1):
        assert np.all(np.diff(theory.expected_angle(ks, rho, n_out=N_OUT)) < 0)


def test_monte_carlo_angle_decreases_in_k(mc_dense: dict[str, np.ndarray]) -> None:
    means = mc_dense["angle"].mean(axis=1)
    assert np.all(np.diff(means) < 0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="k must"):
        theory.expected_angle(0)
    with pytest.raises(ValueError, match="density"):
        theory.expected_angle(10, 0.0)
    with pytest.raises(ValueError, match="density"):
        theory.expected_norm_ratio(10, 1.5)
    with pytest.raises(ValueError, match="orthogonal"):
        theory.monte_carlo_alignment(10, draws=2, b_init="orthogonal")


# ------------------------------------------------------------------------------------------
# Marchenko–Pastur against the Monte Carlo eigenvalues
# ------------------------------------------------------------------------------------------


def test_marchenko_pastur_values() -> None:
    mp = theory.marchenko_pastur(10)
    assert mp.mean == 1.0
    assert mp.variance == pytest.approx(0.1)
    assert mp.support_low == pytest.approx((1 - 1 / math.sqrt(10)) ** 2)
    assert mp.support_high == pytest.approx((1 + 1 / math.sqrt(10)) ** 2)
    assert mp.atom_at_zero == 0.0
    assert theory.marchenko_pastur(0.25).atom_at_zero == pytest.approx(0.75)


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0, 10.0])
def test_marchenko_pastur_pdf_moments(k: float) -> None:
    mp = theory.marchenko_pastur(k)
    lo, hi = mp.support_low, mp.support_high

    def moment(j: int) -> float:
        value, _ = integrate.quad(lambda x: x**j * theory.marchenko_pastur_pdf(x, k), lo, hi)
        return value

    mass = moment(0)
    assert mass == pytest.approx(min(1.0, k), abs=1e-6)
    assert mass + mp.atom_at_zero == pytest.approx(1.0, abs=1e-6)
    assert moment(1) == pytest.approx(mp.mean, abs=1e-6)
    assert moment(2) - moment(1) ** 2 == pytest.approx(mp.variance, abs=1e-6)
    assert theory.marchenko_pastur_pdf(lo - 0.01, k) == 0.0
    assert theory.marchenko_pastur_pdf(hi + 0.01, k) == 0.0


@pytest.mark.parametrize("index", [0, 1, 2])
def test_marchenko_pastur_against_monte_carlo(mc_dense: dict[str, np.ndarray], index: int) -> None:
    k = float(mc_dense["k_effective"][index])
    eig = mc_dense["eigenvalues"][index]  # (draws, N_out)
    mp = theory.marchenko_pastur(k)
    # Mean: per-draw tr(BBᵀ)/N_out.
    mean, se = _mean_and_se(eig.mean(axis=1))
    assert abs(mean - mp.mean) <= SE_FACTOR * se
    # Variance: per-draw mean of (λ − 1)², whose expectation is the exact finite-size
    # E[λ²] − 1 = (N_out + κ − 2)/N_mid; allow the gap to the large-size 1/k.
    var, se = _mean_and_se(((eig - 1.0) ** 2).mean(axis=1))
    finite = theory.eigenvalue_second_moment(k, n_out=N_OUT) - 1.0
    assert abs(var - mp.variance) <= SE_FACTOR * se + abs(finite - mp.variance)
    assert abs(var - finite) <= SE_FACTOR * se
    # Support: the edges fluctuate on the Tracy–Widom scale of the Wishart spectrum, about
    # N_out^(−2/3) (mean shift ≈ −1.2 scales); the hard edge at 0 (k = 1) is much tighter.
    high_scale = _tracy_widom_scale(N_OUT, int(mc_dense["n_mid"][index]), upper=True)
    low_scale = _tracy_widom_scale(N_OUT, int(mc_dense["n_mid"][index]), upper=False)
    assert abs(eig.max(axis=1).mean() - mp.support_high) < 3 * high_scale
    assert abs(eig.min(axis=1).mean() - mp.support_low) < max(3 * low_scale, 1e-3)
    assert eig.max() < mp.support_high + 6 * high_scale
    assert eig.min() > mp.support_low - 6 * low_scale
    # Bulk: empirical CDF at the quartiles of the law.
    for q in (0.25, 0.5, 0.75):
        x = _mp_quantile(q, k)
        assert abs(float((eig < x).mean()) - q) < 0.02


def _tracy_widom_scale(n_out: int, n_mid: int, *, upper: bool) -> float:
    """Fluctuation scale of the extreme eigenvalues of B Bᵀ (Johnstone 2001, unit variance)."""
    a, b = math.sqrt(n_mid), math.sqrt(n_out)
    if upper:
        return (a + b) * (1 / a + 1 / b) ** (1 / 3) / n_mid
    return abs(a - b) * abs(1 / b - 1 / a) ** (1 / 3) / n_mid


def _mp_quantile(q: float, k: float) -> float:
    """Quantile of the Marchenko–Pastur law (k ≥ 1) from its pdf integrated on a fine grid."""
    mp = theory.marchenko_pastur(k)
    x = np.linspace(mp.support_low, mp.support_high, 200_001)
    cdf = integrate.cumulative_trapezoid(theory.marchenko_pastur_pdf(x, k), x, initial=0.0)
    return float(np.interp(q, cdf / cdf[-1], x))


# ------------------------------------------------------------------------------------------
# Finite-size formula against Monte Carlo
# ------------------------------------------------------------------------------------------

# The closed forms are ratios of expectations; the mean per-draw angle differs by
# O(1/(N_out·N_in)), measured < 0.01° at N_out = 100, N_in = 256 (2000–3000 draws).
RATIO_BIAS_DEG = 0.01
RATIO_BIAS_NORM = 1e-3


@pytest.mark.parametrize("index", [0, 1, 2])
def test_finite_size_angle_against_monte_carlo(mc_dense: dict[str, np.ndarray], index: int) -> None:
    k = float(mc_dense["k_effective"][index])
    mean, se = _mean_and_se(mc_dense["angle"][index])
    predicted = theory.expected_angle(k, n_out=N_OUT, n_in=N_IN)
    assert abs(mean - predicted) <= SE_FACTOR * se + RATIO_BIAS_DEG
    assert SE_FACTOR * se < 0.2  # the check is sharp to ~0.1–0.2°
    ratio, se = _mean_and_se(mc_dense["norm_ratio"][index])
    assert abs(ratio - theory.expected_norm_ratio(k, n_out=N_OUT)) <= SE_FACTOR * se + 1e-3
    # Dense: the path with an (all-ones) R mask is the same measurement.
    np.testing.assert_array_equal(mc_dense["path_angle"][index], mc_dense["angle"][index])


def test_sparse_finite_size_against_monte_carlo() -> None:
    rho, k = 0.1, 10.0
    mc = theory.monte_carlo_alignment(k, n_out=N_OUT, n_in=N_IN, draws=60, density=rho, seed=1)
    cases = (
        (mc["path_angle"], theory.expected_angle(k, rho, n_out=N_OUT), RATIO_BIAS_DEG),
        (
            mc["angle"],
            theory.expected_angle(k, rho, n_out=N_OUT, r_masked=False),
            RATIO_BIAS_DEG,
        ),
        (mc["path_norm_ratio"], theory.expected_norm_ratio(k, rho, n_out=N_OUT), RATIO_BIAS_NORM),
        (
            mc["norm_ratio"],
            theory.expected_norm_ratio(k, rho, n_out=N_OUT, r_masked=False),
            RATIO_BIAS_NORM,
        ),
    )
    for values, predicted, bias in cases:
        mean, se = _mean_and_se(values)
        assert abs(mean - predicted) <= SE_FACTOR * se + bias
    # Masked eigenvalues: second moment with κ → κ/ρ.
    second, se = _mean_and_se((mc["eigenvalues"] ** 2).mean(axis=1))
    assert abs(second - theory.eigenvalue_second_moment(k, rho, n_out=N_OUT)) <= SE_FACTOR * se


def test_orthogonal_feedback_is_exact() -> None:
    mc = theory.monte_carlo_alignment(1, n_out=50, n_in=64, draws=8, b_init="orthogonal")
    assert np.max(mc["angle"]) < 1e-6
    np.testing.assert_allclose(mc["eigenvalues"], 1.0, atol=1e-12)
    np.testing.assert_allclose(mc["norm_ratio"], 1.0, atol=1e-12)


def test_monte_carlo_is_deterministic_and_per_k() -> None:
    a = theory.monte_carlo_alignment([2.0, 5.0], n_out=20, n_in=30, draws=7, seed=4)
    b = theory.monte_carlo_alignment(5.0, n_out=20, n_in=30, draws=7, seed=4)
    c = theory.monte_carlo_alignment(5.0, n_out=20, n_in=30, draws=7, seed=5)
    assert a["angle"].shape == (2, 7)
    assert a["eigenvalues"].shape == (2, 7, 20)
    assert b["angle"].shape == (7,)
    np.testing.assert_array_equal(a["angle"][1], b["angle"])
    np.testing.assert_array_equal(a["eigenvalues"][1], b["eigenvalues"])
    assert not np.array_equal(b["angle"], c["angle"])


# ------------------------------------------------------------------------------------------
# Weight decay aligns the product exactly: decay_factors against torch.optim
# ------------------------------------------------------------------------------------------

N_STEPS = 40


def _schedules(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Varying per-step learning rates and weight decays, with some zero-decay steps."""
    rng = np.random.default_rng(seed)
    lr = rng.uniform(0.01, 0.2, N_STEPS)
    wd = rng.uniform(0.0, 0.4, N_STEPS)
    wd[5:9] = 0.0
    return lr, wd


def _run_optimizer(
    make_opt, lr: np.ndarray, wd: np.ndarray, seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Train W and R with grad_R = Bᵀ grad_W from random data; return D_t for every t."""
    n_out, n_mid, n_in, batch = 6, 18, 5, 8
    gen = torch.Generator().manual_seed(seed)
    b = torch.randn(n_out, n_mid, generator=gen, dtype=torch.float64) / math.sqrt(n_mid)
    w = torch.nn.Parameter(torch.randn(n_out, n_in, generator=gen, dtype=torch.float64))
    r = torch.nn.Parameter(torch.randn(n_mid, n_in, generator=gen, dtype=torch.float64))
    opt = make_opt([w, r], lr=float(lr[0]), weight_decay=float(wd[0]))
    history = [(r - b.T @ w).detach().clone()]
    for t in range(lr.size):
        x = torch.randn(batch, n_in, generator=gen, dtype=torch.float64)
        delta = torch.randn(batch, n_out, generator=gen, dtype=torch.float64)
        w.grad = delta.T @ x
        r.grad = b.T @ w.grad
        for group in opt.param_groups:
            group["lr"] = float(lr[t])
            group["weight_decay"] = float(wd[t])
        opt.step()
        history.append((r - b.T @ w).detach().clone())
    return history, history[0]


SGD_CONFIGS = [
    {"momentum": 0.0},
    {"momentum": 0.9},
    {"momentum": 0.5, "dampening": 0.3},
    {"momentum": 0.9, "nesterov": True},
]


@pytest.mark.parametrize(
    "config", SGD_CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items())
)
def test_decay_factors_match_torch_sgd(config: dict) -> None:
    lr, wd = _schedules(seed=len(config))

    def make_opt(params, lr, weight_decay):
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **config)

    history, d0 = _run_optimizer(make_opt, lr, wd)
    c = theory.decay_factors(lr, wd, **config)
    assert c.shape == (N_STEPS + 1,)
    assert c[0] == 1.0
    scale = torch.linalg.norm(d0).item()
    for t, d_t in enumerate(history):
        assert torch.linalg.norm(d_t - c[t] * d0).item() <= 1e-10 * scale, f"step {t}"
    assert abs(c[-1]) < 0.5  # the schedule really shrinks D
    # The check is index-sensitive: pairing lr[t] with wd[t + 1] is visibly wrong.
    shifted = theory.decay_factors(lr[:-1], wd[1:], **config)
    assert np.max(np.abs(shifted - c[:-1])) > 1e-3


def test_decay_factors_plain_sgd_is_cumulative_product() -> None:
    lr, wd = _schedules(seed=7)
    expected = np.concatenate([[1.0], np.cumprod(1 - lr * wd)])
    np.testing.assert_allclose(theory.decay_factors(lr, wd), expected, rtol=1e-14)


def test_decay_factors_scalar_broadcast() -> None:
    c = theory.decay_factors(0.1, 0.03, momentum=0.9, n_steps=5)
    np.testing.assert_allclose(
        c, theory.decay_factors(np.full(5, 0.1), np.full(5, 0.03), momentum=0.9)
    )
    np.testing.assert_allclose(theory.decay_factors(0.1, [0.0, 0.5]), [1.0, 1.0, 0.95])
    with pytest.raises(ValueError, match="n_steps"):
        theory.decay_factors(0.1, 0.03)
    with pytest.raises(ValueError, match="same length"):
        theory.decay_factors([0.1, 0.1], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="Nesterov"):
        theory.decay_factors(0.1, 0.1, n_steps=3, nesterov=True)


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW])
def test_identity_fails_under_adaptive_optimizers(optimizer) -> None:
    """Documents the assumption: under Adam/AdamW, D_t is not any multiple of D_0."""
    lr, wd = _schedules(seed=11)

    def make_opt(params, lr, weight_decay):
        return optimizer(params, lr=lr, weight_decay=weight_decay)

    history, d0 = _run_optimizer(make_opt, lr, wd)
    d_t = history[-1]
    best_c = (torch.sum(d_t * d0) / torch.sum(d0 * d0)).item()  # least-squares multiple
    residual = torch.linalg.norm(d_t - best_c * d0).item() / torch.linalg.norm(d0).item()
    assert residual > 1e-2


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------


def _pair(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=gen, dtype=torch.float64)
    b = torch.randn(shape, generator=gen, dtype=torch.float64) + 0.5 * a
    return a.to(dtype), b.to(dtype)


def _arccos_reference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The paper's angle definition, evaluated in float64."""
    va, vb = a.double().flatten(), b.double().flatten()
    cos = torch.dot(va / va.norm(), vb / vb.norm()).clamp(-1.0, 1.0)
    return math.degrees(math.acos(cos.item()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7,), (4, 5), (3, 2, 3, 3)])
def test_angle_properties(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    a, b = _pair(shape, dtype, seed=sum(shape))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    theta = angle(a, b)
    assert theta.dtype == dtype and theta.ndim == 0
    assert float(theta) == pytest.approx(_arccos_reference(a, b), abs=tol)
    assert float(angle(b, a)) == pytest.approx(float(theta), abs=tol)  # symmetric
    assert float(angle(3.0 * a, 0.25 * b)) == pytest.approx(float(theta), abs=tol)  # scale
    assert float(angle(a, a)) == 0.0  # self
    assert float(angle(a, -a)) == 180.0  # negation
    assert float(angle(a, -b)) == pytest.approx(180.0 - float(theta), abs=tol)


def test_angle_orthogonal() -> None:
    a = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, -1.0], [3.0, 0.0]], dtype=torch.float64)
    assert float(angle(a, b)) == pytest.approx(90.0, abs=1e-12)
    x, y = _pair((50,), torch.float64, seed=1)
    y = y - torch.dot(x, y) / torch.dot(x, x) * x
    assert float(angle(x, y)) == pytest.approx(90.0, abs=1e-10)


def test_angle_small_angles_keep_precision_in_float32() -> None:
    a, noise = _pair((1000,), torch.float32, seed=2)
    b = a + 1e-4 * noise
    reference = _arccos_reference(a, b)  # float64 on the float32 values
    assert 0.001 < reference < 0.05
    assert float(angle(a, b)) == pytest.approx(reference, rel=1e-3)


def test_angle_errors() -> None:
    a = torch.ones(3)
    with pytest.raises(ValueError, match="zero norm"):
        angle(a, torch.zeros(3))
    with pytest.raises(ValueError, match="zero norm"):
        angle(torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="shapes differ"):
        angle(a, torch.ones(4))
    with pytest.raises(ValueError, match="shapes differ"):
        angle(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(TypeError, match="floating"):
        angle(torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64))


def test_angle_mixed_dtype_promotes() -> None:
    a, b = _pair((6,), torch.float64, seed=3)
    assert angle(a.float(), b).dtype == torch.float64


def test_angle_is_differentiable() -> None:
    a, b = _pair((3, 4), torch.float64, seed=4)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(angle, (a, b))
    assert torch.autograd.gradcheck(angle_rows, (a, b))
    assert torch.autograd.gradcheck(norm_ratio, (a, b))


def test_angle_rows_matches_angle() -> None:
    a, b = _pair((5, 3, 4), torch.float64, seed=5)
    rows = angle_rows(a, b)
    assert rows.shape == (5,) and rows.dtype == torch.float64
    expected = torch.stack([angle(a[i], b[i]) for i in range(5)])
    torch.testing.assert_close(rows, expected, rtol=0, atol=1e-10)
    assert angle_rows(a.float(), b.float()).dtype == torch.float32
    torch.testing.assert_close(angle_rows(a, a), torch.zeros(5, dtype=torch.float64))


def test_angle_rows_errors() -> None:
    a = torch.ones(3, 4)
    b = torch.ones(3, 4)
    b[1] = 0.0
    with pytest.raises(ValueError, match=r"zero norm in row\(s\) \[1\]"):
        angle_rows(a, b)
    with pytest.raises(ValueError, match="0-d"):
        angle_rows(torch.tensor(1.0), torch.tensor(2.0))
    with pytest.raises(ValueError, match="shapes differ"):
        angle_rows(a, torch.ones(4, 3))


def test_norm_ratio() -> None:
    a = torch.tensor([3.0, 4.0])
    b = torch.tensor([0.0, 2.0])
    ratio = norm_ratio(a, b)
    assert ratio.dtype == torch.float32 and ratio.ndim == 0
    assert float(ratio) == pytest.approx(2.5)
    assert float(norm_ratio(torch.zeros(2), b)) == 0.0
    with pytest.raises(ValueError, match="zero norm"):
        norm_ratio(a, torch.zeros(2))
    with pytest.raises(ValueError, match="shapes differ"):
        norm_ratio(a, torch.ones(3))
