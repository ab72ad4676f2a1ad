"""Closed forms of the PFA theory (Li & Benna, arXiv 2405.20594) and a Monte-Carlo check of them.

The theory, as numbered properties that the rest of the code and the tests refer to:

1. *Weight decay aligns the product exactly*: D = R − BᵀW contracts by the same factor as the
   weights each step, whatever the data (:func:`decay_factors`).
2. *Fixed point*: R* = BᵀW, so the effective feedback is B Bᵀ W (PFA-o: exactly W).
3. *Spectrum of B Bᵀ*: Marchenko–Pastur, mean 1, variance 1/k (:func:`marchenko_pastur`).
4. *Alignment vs expansion ratio k*: cos θ = √(k/(k+1)), norm ratio √(1 + 1/k)
   (:func:`expected_angle`, :func:`expected_norm_ratio`).
5. *Sparse feedback* (density ρ on B and R): cos θ ≈ 1/√(1 + 1/(ρk)).
6. *Values at initialisation* (:func:`initial_path_norm_ratio`, :func:`usf_initial_angle`,
   :func:`fa_initial_angle`).
7. *Sign symmetry*: ⟨W, sign W⟩ = ‖W‖₁ > 0, so the feedback's angle to W is below 90°.
8. *The first layer's feedback is never used*: FA's first-layer alignment stays near 90°.

Conventions: W is N_out × N_in; PFA's feedback is B (N_out × N_mid, fixed) times
R (N_mid × N_in, learned), N_mid = k·N_out; B is Xavier-uniform with gain √((1+1/k)/2/ρ), so its
entries have variance 1/(ρ·N_mid) before the Bernoulli(ρ) mask and 1/N_mid after it, and
E[B Bᵀ] = I. At the weight-decay fixed point R* = Bᵀ W (property 2) the effective feedback is
F = B Bᵀ W; with a density-ρ mask P on R it is F = B (P ⊙ Bᵀ W).

Everything here takes numbers or NumPy arrays (broadcast against each other) and returns a
Python float for scalar input, an ``ndarray`` otherwise; only :func:`monte_carlo_alignment`
uses torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from alignment.metrics import angle_rows

__all__ = [
    "KAPPA_GAUSSIAN",
    "KAPPA_UNIFORM",
    "MarchenkoPastur",
    "decay_factors",
    "eigenvalue_second_moment",
    "expected_angle",
    "expected_norm_ratio",
    "fa_initial_angle",
    "initial_path_norm_ratio",
    "marchenko_pastur",
    "marchenko_pastur_pdf",
    "monte_carlo_alignment",
    "path_moments",
    "realised_path_alignment",
    "usf_initial_angle",
]

KAPPA_UNIFORM = 9.0 / 5.0
"""E[x⁴]/E[x²]² of a centred uniform variable (Xavier-uniform entries)."""
KAPPA_GAUSSIAN = 3.0
"""E[x⁴]/E[x²]² of a centred Gaussian variable."""

ArrayLike = float | int | Sequence[float] | np.ndarray


def _out(x: np.ndarray) -> float | np.ndarray:
    """A Python float for a 0-d result, the array otherwise."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _positive(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {x!r}")
    return arr


def _density(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1):
        raise ValueError(f"density must lie in (0, 1], got {x!r}")
    return arr


# --------------------------------------------------------------------------------------------
# Moments of the effective feedback (properties 3–5)
# --------------------------------------------------------------------------------------------


def eigenvalue_second_moment(
    k: ArrayLike,
    density: ArrayLike = 1.0,
    n_out: ArrayLike | None = None,
    kappa: float = KAPPA_UNIFORM,
) -> float | np.ndarray:
    """Second moment E[λ²] = E[tr (B Bᵀ)²]/N_out of the eigenvalues of B Bᵀ (properties 3–4).

    Assumptions: B is N_out × N_mid, N_mid = k·N_out, with i.i.d. centred entries of variance
    1/N_mid and kurtosis κ_B = E[b⁴]/E[b²]². For a Bernoulli(ρ) mask on entries of variance
    1/(ρ·N_mid), E[b²] = 1/N_mid and E[b⁴] = ρ·κ/(ρ·N_mid)², so κ_B = κ/ρ.

    Derivation (exact for every size): the diagonal entries of M = B Bᵀ give
    E[(Σ_m b²)²] = N_mid·κ_B/N_mid² + N_mid(N_mid − 1)/N_mid², the off-diagonal ones
    E[(Σ_m b_im b_jm)²] = 1/N_mid, hence

        E[λ²] = 1 + (N_out − 1)/N_mid + (κ_B − 1)/N_mid  →  1 + 1/k   (N_out → ∞).

    With ``n_out=None`` the large-size limit 1 + 1/k is returned (there the mask does not matter).
    """
    kk = _positive(k, "k")
    rho = _density(density)
    if n_out is None:
        return _out(1.0 + 1.0 / kk + 0.0 * rho)
    nn = _positive(n_out, "n_out")
    n_mid = kk * nn
    kappa_b = kappa / rho
    return _out(1.0 + (nn - 1.0) / n_mid + (kappa_b - 1.0) / n_mid)


def path_moments(
    k: ArrayLike,
    density: ArrayLike = 1.0,
    n_out: ArrayLike | None = None,
    kappa: float = KAPPA_UNIFORM,
    *,
    b_masked: bool = True,
    r_masked: bool = True,
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """First and second moments of the fixed-point feedback F relative to W (properties 4–5).

    F = B (P ⊙ Bᵀ W) where P is a Bernoulli(ρ_R) mask on R (ρ_R = ρ if ``r_masked`` else 1) and
    B has κ_B = κ/ρ_B (ρ_B = ρ if ``b_masked`` else 1), entries of variance 1/N_mid (see
    :func:`eigenvalue_second_moment`). W is independent of B and P with i.i.d. centred entries.
    Writing u_m for the columns of B and taking expectations over W first (E wᵀAw = σ² tr A):

        m1 = E⟨W, F⟩ / E‖W‖² = ρ_R,
        m2 = E‖F‖² / E‖W‖²   = ρ_R²·(N_mid − 1)/N_mid + ρ_R·(N_out − 1 + κ_B)/N_mid
                             →  ρ_R² + ρ_R/k   (N_out → ∞, k fixed).

    Dense (ρ = 1): m1 = 1, m2 = E[λ²]. With ``n_out=None`` the large-size limits are returned.
    Neither moment depends on N_in or on the distribution of W.
    """
    kk = _positive(k, "k")
    rho = _density(density)
    rho_r = rho if r_masked else np.ones_like(rho)
    rho_b = rho if b_masked else np.ones_like(rho)
    if n_out is None:
        m2 = rho_r**2 + rho_r / kk
    else:
        nn = _positive(n_out, "n_out")
        n_mid = kk * nn
        kappa_b = kappa / rho_b
        m2 = rho_r**2 * (n_mid - 1.0) / n_mid + rho_r * (nn - 1.0 + kappa_b) / n_mid
    m1 = rho_r + 0.0 * m2
    return _out(m1), _out(m2)


def expected_angle(
    k: ArrayLike,
    density: ArrayLike = 1.0,
    n_out: ArrayLike | None = None,
    n_in: ArrayLike | None = None,
    kappa: float = KAPPA_UNIFORM,
    *,
    b_masked: bool = True,
    r_masked: bool = True,
) -> float | np.ndarray:
    """Expected path alignment angle(W, F) in degrees at PFA's fixed point (properties 4–5).

    cos θ = E⟨W, F⟩ / √(E‖W‖²·E‖F‖²) = m1/√m2 with m1, m2 from :func:`path_moments`:

    * dense, large size (property 4): cos θ = √(k/(k+1)) — 45.00°, 17.55°, 5.71° at k = 1, 10, 100;
    * dense, finite size: cos θ = 1/√E[λ²], E[λ²] = 1 + (N_out − 1)/N_mid + (κ − 1)/N_mid;
    * sparse, large size (property 5, masks on B and R): cos θ = 1/√(1 + 1/(ρk));
    * sparse, finite size: cos θ = 1/√((N_mid − 1)/N_mid + (N_out − 1 + κ/ρ_B)/(ρ_R·N_mid)).

    ``b_masked=True, r_masked=False`` gives angle(W, B Bᵀ W) for a masked B, where sparsity only
    enters through the finite-size term (κ → κ/ρ).

    Assumptions: W independent of B (and of the masks) with i.i.d. centred entries; R at its
    fixed point P ⊙ Bᵀ W. The formula is a ratio of expectations, exact to leading order; the mean
    over draws of the per-draw angle differs by O(1/(N_out·N_in)) — below 0.01° at N_out = 100,
    N_in = 256, about 0.5° at N_out = 20, N_in = 4. ``n_in`` is accepted for symmetry with
    :func:`monte_carlo_alignment` and validated, but does not enter at this order.
    """
    if n_in is not None:
        _positive(n_in, "n_in")
    m1, m2 = path_moments(k, density, n_out, kappa, b_masked=b_masked, r_masked=r_masked)
    cos = np.clip(np.asarray(m1) / np.sqrt(m2), -1.0, 1.0)
    return _out(np.degrees(np.arccos(cos)))


def expected_norm_ratio(
    k: ArrayLike,
    density: ArrayLike = 1.0,
    n_out: ArrayLike | None = None,
    n_in: ArrayLike | None = None,
    kappa: float = KAPPA_UNIFORM,
    *,
    b_masked: bool = True,
    r_masked: bool = True,
) -> float | np.ndarray:
    """Expected path norm ratio ‖F‖/‖W‖ at PFA's fixed point (properties 4–5), as √m2.

    * dense, large size: ‖B Bᵀ W‖/‖W‖ = √(1 + 1/k) (1.049 at k = 10);
    * sparse, large size: ‖B R‖/‖W‖ = ρ·√(1 + 1/(ρk)).

    The sparse form assumes that R's mask P (density ρ) also thins the fixed point, R* = P ⊙ BᵀW:
    the ratio then carries a factor ρ because only a fraction ρ of Bᵀ W survives, and the
    1/(ρk) term comes from the diagonal (m = m') terms of ‖B (P ⊙ Bᵀ W)‖². A mask on B alone
    leaves the large-size ratio at √(1 + 1/k). ``n_out`` adds the exact finite-size term of
    :func:`path_moments` (root of the ratio of mean squares); ``n_in`` does not enter.
    """
    if n_in is not None:
        _positive(n_in, "n_in")
    _, m2 = path_moments(k, density, n_out, kappa, b_masked=b_masked, r_masked=r_masked)
    return _out(np.sqrt(m2))


def realised_path_alignment(b: np.ndarray, density: float = 1.0) -> tuple[float, float]:
    """Expected path alignment (degrees) and norm ratio at PFA's fixed point for a *realised* B.

    B is N_out × N_mid as the backward uses it (sparsity mask applied); W has i.i.d. centred
    entries independent of B; R sits at its fixed point P ⊙ Bᵀ W with P a Bernoulli(ρ) mask
    (ρ = ``density``, P averaged over). With M = B Bᵀ (eigenvalues λ_i) and G = Bᵀ B, taking
    expectations over W column by column (E wᵀAw = σ² tr A) and over P:

        E⟨W, F⟩ / E‖W‖² = ρ tr M / N_out,
        E‖F‖² / E‖W‖²   = (ρ² tr M² + ρ(1 − ρ) Σ_m G_mm²) / N_out,

    cos θ = (first)/√(second), ratio = √(second). Dense (ρ = 1) this is the spectrum alone:
    cos θ = mean λ / √(mean λ²), ‖F‖/‖W‖ = √(mean λ²) (at large size, with the Marchenko–Pastur
    moments, :func:`expected_angle` and :func:`expected_norm_ratio`). A ratio of expectations,
    like :func:`expected_angle`; the angle of one W differs by O(1/√(N_out·N_in)).
    """
    rho = float(_density(density))
    b64 = np.asarray(b, dtype=np.float64).reshape(np.shape(b)[0], -1)
    n_out = b64.shape[0]
    m = b64 @ b64.T
    first = rho * np.trace(m) / n_out
    column_sq = np.einsum("ij,ij->j", b64, b64)
    second = (rho**2 * np.sum(m * m) + rho * (1.0 - rho) * np.sum(column_sq**2)) / n_out
    if second <= 0.0:
        return math.nan, math.nan
    cos = min(1.0, max(-1.0, first / math.sqrt(second)))
    return math.degrees(math.acos(cos)), math.sqrt(second)


# --------------------------------------------------------------------------------------------
# Spectrum of B Bᵀ (property 3)
# --------------------------------------------------------------------------------------------


class MarchenkoPastur(NamedTuple):
    """Moments and support of the eigenvalues of B Bᵀ in the large-size limit."""

    mean: float | np.ndarray
    variance: float | np.ndarray
    support_low: float | np.ndarray
    support_high: float | np.ndarray
    atom_at_zero: float | np.ndarray


def marchenko_pastur(k: ArrayLike) -> MarchenkoPastur:
    """Marchenko–Pastur law of the eigenvalues of B Bᵀ (property 3).

    B is N_out × N_mid with i.i.d. entries of variance 1/N_mid, so B Bᵀ (N_out × N_out) is a
    Wishart matrix with aspect ratio y = N_out/N_mid = 1/k and scale 1:

        mean = 1,  variance = y = 1/k,  support [(1 − 1/√k)², (1 + 1/√k)²].

    For k < 1 the matrix has rank N_mid < N_out: a fraction 1 − k of the eigenvalues sits at 0
    (``atom_at_zero``); mean and variance above include that atom. PFA-o (orthogonal B, k = 1) is
    not random: all its eigenvalues equal 1.
    """
    kk = _positive(k, "k")
    y = 1.0 / kk
    return MarchenkoPastur(
        mean=_out(np.ones_like(kk)),
        variance=_out(y),
        support_low=_out((1.0 - np.sqrt(y)) ** 2),
        support_high=_out((1.0 + np.sqrt(y)) ** 2),
        atom_at_zero=_out(np.maximum(0.0, 1.0 - kk)),
    )


def marchenko_pastur_pdf(x: ArrayLike, k: ArrayLike) -> float | np.ndarray:
    """Continuous Marchenko–Pastur density of the eigenvalues of B Bᵀ (property 3).

    With y = N_out/N_mid = 1/k, a = (1 − √y)², b = (1 + √y)²:

        p(x) = √((b − x)(x − a)) / (2π·y·x)   for a < x < b (and x > 0),  0 elsewhere.

    It integrates to min(1, k); for k < 1 the remaining mass 1 − k is an atom at 0 that this
    density does not include. At k = 1 the density diverges like x^(−1/2) at the lower edge 0.
    """
    xx = np.asarray(x, dtype=np.float64)
    y = 1.0 / _positive(k, "k")
    low = (1.0 - np.sqrt(y)) ** 2
    high = (1.0 + np.sqrt(y)) ** 2
    inside = (xx > low) & (xx < high) & (xx > 0)
    safe_x = np.where(inside, xx, 1.0)
    radicand = np.where(inside, (high - safe_x) * (safe_x - low), 0.0)
    density = np.sqrt(np.maximum(radicand, 0.0)) / (2.0 * np.pi * y * safe_x)
    return _out(np.where(inside, density, 0.0))


# --------------------------------------------------------------------------------------------
# Weight decay aligns the product exactly (property 1)
# --------------------------------------------------------------------------------------------


def _schedule(
    lr: ArrayLike, weight_decay: ArrayLike, n_steps: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast lr and weight_decay to two equal-length 1-d float arrays."""
    lr_a = np.asarray(lr, dtype=np.float64)
    wd_a = np.asarray(weight_decay, dtype=np.float64)
    if lr_a.ndim > 1 or wd_a.ndim > 1:
        raise ValueError("lr and weight_decay must be scalars or 1-d sequences")
    lengths = {a.size for a in (lr_a, wd_a) if a.ndim == 1}
    if n_steps is not None:
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        lengths.add(n_steps)
    if len(lengths) != 1:
        raise ValueError(
            "decay_factors: give n_steps for scalar lr and weight_decay, and make every "
            f"sequence the same length (got lengths {sorted(lengths)})"
        )
    steps = lengths.pop()
    lr_a = np.broadcast_to(lr_a, (steps,)).astype(np.float64)
    wd_a = np.broadcast_to(wd_a, (steps,)).astype(np.float64)
    if not (np.all(np.isfinite(lr_a)) and np.all(np.isfinite(wd_a))):
        raise ValueError("lr and weight_decay must be finite")
    return lr_a, wd_a


def decay_factors(
    lr: ArrayLike,
    weight_decay: ArrayLike,
    momentum: float = 0.0,
    *,
    n_steps: int | None = None,
    dampening: float = 0.0,
    nesterov: bool = False,
) -> np.ndarray:
    """Exact factors c_t with D_t = c_t·D_0, D = R − Bᵀ W, under ``torch.optim.SGD`` (property 1).

    Since grad_R = Bᵀ grad_W for any data and loss, the data terms cancel in D and SGD with
    coupled L2 (d = g + λ_t·p on both W and R, the same lr, momentum and weight decay) acts on D
    only through its weight-decay term. Step t = 0, …, T−1 uses η_t = lr[t], λ_t = weight_decay[t]:

    * plain SGD (μ = 0):  c_{t+1} = c_t·(1 − η_t λ_t);
    * momentum μ (PyTorch: first buffer = first d_p, then buf = μ·buf + (1 − dampening)·d_p):
      b_1 = λ_0 c_0,  b_{t+1} = μ b_t + (1 − dampening)·λ_t c_t,  c_{t+1} = c_t − η_t·s_{t+1},
      with s_{t+1} = b_{t+1} (property 1's recursion, dampening 0), or
      s_{t+1} = λ_t c_t + μ b_{t+1} with ``nesterov=True``.

    Verified against ``torch.optim.SGD`` in float64 to 1e-10 (tests/test_theory.py), including
    per-step changes of lr and weight decay through ``param_groups``. Assumptions: W and R in
    one optimizer with identical hyperparameters, B fixed and free of weight decay, no masks,
    clipping or adaptive optimizers (Adam/AdamW break the identity), c_0 = 1 (buffers empty).

    Args:
        lr: per-step sequence of length T, or a scalar (then give ``n_steps``).
        weight_decay: the same for the coupled L2 coefficient.
        momentum: as in ``torch.optim.SGD``.
        dampening: as in ``torch.optim.SGD``.
        nesterov: as in ``torch.optim.SGD``.

    Returns:
        Array of length T + 1 with c_0 = 1.
    """
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    lr_a, wd_a = _schedule(lr, weight_decay, n_steps)
    c = np.empty(lr_a.size + 1, dtype=np.float64)
    c[0] = 1.0
    buf: float | None = None
    for t in range(lr_a.size):
        d = wd_a[t] * c[t]
        if momentum == 0:
            step = d
        else:
            buf = d if buf is None else momentum * buf + (1.0 - dampening) * d
            step = d + momentum * buf if nesterov else buf
        c[t + 1] = c[t] - lr_a[t] * step
    return c


def decay_step(
    c: float,
    buf: float | None,
    lr: float,
    weight_decay: float,
    momentum: float = 0.0,
    *,
    dampening: float = 0.0,
    nesterov: bool = False,
) -> tuple[float, float | None]:
    """One update of :func:`decay_factors`' recursion: ``(c_{t+1}, b_{t+1})`` from ``(c_t, b_t)``.

    ``buf`` is the momentum buffer's factor (``None`` before the first update with a momentum,
    as ``torch.optim.SGD`` keeps no buffer until then; it stays ``None`` while ``momentum`` is
    0). The same floating-point operations in the same order as :func:`decay_factors`, so
    iterating it gives the same bits; the recorder advances it at every optimizer step with the
    hyperparameters of that step (``alignment.recording.decay``).
    """
    d = weight_decay * c
    if momentum == 0:
        step = d
    else:
        buf = d if buf is None else momentum * buf + (1.0 - dampening) * d
        step = d + momentum * buf if nesterov else buf
    return c - lr * step, buf


# --------------------------------------------------------------------------------------------
# Values at initialisation (property 6)
# --------------------------------------------------------------------------------------------


def initial_path_norm_ratio(n_in: ArrayLike, n_out: ArrayLike, k: ArrayLike) -> float | np.ndarray:
    """PFA path norm ratio ‖B R‖/‖W‖ at Xavier initialisation (property 6).

    W and R are Xavier-uniform: Var W = 2/(N_in + N_out), Var R = 2/(N_in + k·N_out); B is
    independent of R with E tr(Bᵀ B) = N_out. Hence E‖B R‖² = N_in·N_out·Var R and
    E‖W‖² = N_in·N_out·Var W, and

        ‖B R‖/‖W‖ ≈ √((N_in + N_out)/(N_in + k·N_out))

    (channels in place of units for conv layers; 0.469 / 0.426 / 0.924 for the MNIST layers
    784→512, 512→512, 512→10 at k = 10). PFA-o (k = 1, orthogonal B) gives exactly 1 in expectation.
    """
    ni = _positive(n_in, "n_in")
    no = _positive(n_out, "n_out")
    kk = _positive(k, "k")
    return _out(np.sqrt((ni + no) / (ni + kk * no)))


def usf_initial_angle(distribution: str = "uniform") -> float:
    """Angle in degrees between W and its sign-symmetric feedback s·sign(W) at init (property 6).

    For i.i.d. centred entries, cos θ = ⟨W, sign W⟩/(‖W‖·‖sign W‖) = Σ|w|/(√(Σw²)·√n)
    → E|w|/√(E w²) (the scale s cancels):

    * uniform on [−a, a]: E|w| = a/2, E w² = a²/3, cos θ = √3/2, θ = 30°;
    * Gaussian: E|w| = σ√(2/π), cos θ = √(2/π), θ ≈ 37.03°.
    """
    if distribution == "uniform":
        cos = math.sqrt(3.0) / 2.0
    elif distribution == "gaussian":
        cos = math.sqrt(2.0 / math.pi)
    else:
        raise ValueError(f"distribution must be 'uniform' or 'gaussian', got {distribution!r}")
    return math.degrees(math.acos(cos))


def fa_initial_angle() -> float:
    """Angle between W and an independent random feedback matrix at init: 90° (property 6).

    For independent centred W and B, ⟨W, B⟩/(‖W‖‖B‖) has mean 0 and standard deviation
    1/√(N_out·N_in), so the angle concentrates at 90° (PFA's B R at init likewise).
    """
    return 90.0


# --------------------------------------------------------------------------------------------
# Monte Carlo (the paper's Fig. 3)
# --------------------------------------------------------------------------------------------

_MC_ELEMENT_BUDGET = 1 << 23  # largest intermediate tensor per chunk, in elements (64 MiB f64)


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    """i.i.d. U(−bound, bound) entries in float64."""
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound


def _feedback_b(
    draws: int, n_out: int, n_mid: int, density: float, b_init: str, gen: torch.Generator
) -> torch.Tensor:
    """A batch of PFA feedback matrices B, shape (draws, N_out, N_mid).

    Random: Xavier-uniform with gain √((1 + N_out/N_mid)/2/ρ), i.e. bound √(3/(ρ·N_mid)), then a
    Bernoulli(ρ) mask. Orthogonal (N_mid = N_out): Haar-random Q from a QR decomposition.
    """
    if b_init == "orthogonal":
        q, r = torch.linalg.qr(
            torch.randn((draws, n_out, n_out), generator=gen, dtype=torch.float64)
        )
        return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    k_eff = n_mid / n_out
    gain = math.sqrt((1.0 + 1.0 / k_eff) / 2.0 / density)
    b = _uniform((draws, n_out, n_mid), gain * math.sqrt(6.0 / (n_out + n_mid)), gen)
    if density < 1.0:
        b = b * (torch.rand(b.shape, generator=gen, dtype=torch.float64) < density)
    return b


def _row_norm_ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a[i]‖/‖b[i]‖ for every leading index i."""
    return torch.linalg.vector_norm(a.flatten(1), dim=1) / torch.linalg.vector_norm(
        b.flatten(1), dim=1
    )


def _mc_chunk(
    d: int, n_out: int, n_in: int, n_mid: int, density: float, b_init: str, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Draw ``d`` independent (W, B, P) triples and measure them."""
    w = _uniform((d, n_out, n_in), math.sqrt(6.0 / (n_in + n_out)), gen)
    b = _feedback_b(d, n_out, n_mid, density, b_init, gen)
    m = b @ b.transpose(1, 2)
    f = m @ w
    out = {
        "eigenvalues": torch.linalg.eigvalsh(m),
        "angle": angle_rows(w, f),
        "norm_ratio": _row_norm_ratio(f, w),
    }
    if density < 1.0:
        y = b.transpose(1, 2) @ w
        y = y * (torch.rand(y.shape, generator=gen, dtype=torch.float64) < density)
        f = b @ y
    out["path_angle"] = angle_rows(w, f)
    out["path_norm_ratio"] = _row_norm_ratio(f, w)
    return out


def _mc_one_k(
    n_mid: int, n_out: int, n_in: int, draws: int, density: float, b_init: str, seed: int
) -> dict[str, np.ndarray]:
    """All draws for one expansion ratio, generated in memory-bounded chunks."""
    state = np.random.SeedSequence([seed, n_out, n_in, n_mid, int(b_init == "orthogonal")])
    gen = torch.Generator().manual_seed(int(state.generate_state(1, dtype=np.uint32)[0]))
    chunk = max(1, _MC_ELEMENT_BUDGET // (n_mid * max(n_out, n_in)))
    parts = [
        _mc_chunk(min(chunk, draws - start), n_out, n_in, n_mid, density, b_init, gen)
        for start in range(0, draws, chunk)
    ]
    return {key: torch.cat([p[key] for p in parts]).numpy() for key in parts[0]}


def monte_carlo_alignment(
    k: ArrayLike,
    *,
    n_out: int = 100,
    n_in: int = 256,
    draws: int = 100,
    density: float = 1.0,
    seed: int = 0,
    b_init: str = "random",
) -> dict[str, np.ndarray]:
    """Monte-Carlo of the fixed-point alignment and of B Bᵀ's spectrum (properties 3–5, Fig. 3).

    For each k: N_mid = round(k·N_out); ``draws`` independent W (N_out × N_in, Xavier-uniform) and
    B (N_out × N_mid, Xavier-uniform with gain √((1 + 1/k)/2/ρ) so Var = 1/(ρ·N_mid), then a
    Bernoulli(ρ) mask when ``density`` ρ < 1), and for ρ < 1 a Bernoulli(ρ) mask P on R.
    ``b_init="orthogonal"`` (k = 1, ρ = 1 only) uses a Haar-orthogonal B, so B Bᵀ = I exactly.
    Draws are batched (chunks bounded in memory); the only Python loops run over k and chunks.

    Seeding: each k uses its own generator derived from (seed, N_out, N_in, N_mid, b_init), so a
    result does not depend on the other k values requested; the same call is bit-reproducible.

    Returns a dict; with scalar ``k`` the per-k leading axis is dropped:

    * ``k``: requested k, ``k_effective``: N_mid/N_out actually used, ``n_mid``;
    * ``eigenvalues``: (K, draws, N_out) eigenvalues of B Bᵀ, ascending;
    * ``angle``, ``norm_ratio``: (K, draws) angle(W, B Bᵀ W) in degrees and ‖B Bᵀ W‖/‖W‖;
    * ``path_angle``, ``path_norm_ratio``: (K, draws) the same for F = B (P ⊙ Bᵀ W), PFA's fixed
      point with a masked R (property 5); equal to ``angle``/``norm_ratio`` when ρ = 1.
    """
    ks = _positive(k, "k")
    if ks.ndim > 1:
        raise ValueError("k must be a scalar or a 1-d sequence")
    if min(n_out, n_in, draws) < 1:
        raise ValueError("n_out, n_in and draws must be >= 1")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rho = float(_density(density))
    if b_init not in ("random", "orthogonal"):
        raise ValueError(f"b_init must be 'random' or 'orthogonal', got {b_init!r}")
    n_mids = np.maximum(1, np.rint(np.atleast_1d(ks) * n_out)).astype(np.int64)
    if b_init == "orthogonal" and (np.any(n_mids != n_out) or rho < 1.0):
        raise ValueError("b_init='orthogonal' (PFA-o) requires k = 1 and density = 1")
    per_k = [_mc_one_k(int(nm), n_out, n_in, draws, rho, b_init, seed) for nm in n_mids]
    result = {key: np.stack([r[key] for r in per_k]) for key in per_k[0]}
    result["k"] = np.atleast_1d(ks).astype(np.float64)
    result["n_mid"] = n_mids
    result["k_effective"] = n_mids / n_out
    if ks.ndim == 0:
        result = {key: value[0] for key, value in result.items()}
    return result
