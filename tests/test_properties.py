"""Property-based tests of the theory (alignment.theory's properties) and of every rule's backward.

Every property is checked against an independent oracle: torch autograd on plain ``F.linear`` /
``F.conv2d`` with the feedback tensor substituted for W (e.g. ``autograd.grad(F.conv2d(x, F_eff),
x, δ)``), explicit matrix formulas built from the layers' raw tensors (``B``, ``R``, ``D``, masks),
or closed forms from :mod:`alignment.theory`; never against the engine itself. Everything runs in
float64. Statistical checks use fixed seeds and tolerances derived from the statistics (each
comment states the false-failure probability of a correct implementation).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, example, given
from hypothesis import strategies as st
from torch import Tensor, nn

import alignment
from alignment.metrics import angle
from alignment.theory import decay_factors
from tests.strategies import (
    ASYMMETRIC_SAME,
    ConvCase,
    LinearCase,
    SGDSchedule,
    conv_cases,
    densities,
    ks,
    linear_cases,
    mlp_widths,
    paths,
    seeds,
    sgd_schedules,
    sparse_densities,
)

pytestmark = pytest.mark.usefixtures("float64", "one_thread")


@pytest.fixture(scope="module")
def one_thread():
    """The tensors here are tiny: intra-op threads only add synchronisation (and, on a loaded
    machine, spinning OpenMP barriers that make a 5×5 convolution take milliseconds)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


EXACT = 1e-12
"""Relative tolerance for identities that hold up to float64 rounding."""
DYNAMICS = 1e-10
"""Relative tolerance for the alignment dynamics over several optimiser steps."""
Z = 6.0
"""z-score bound of the statistical tests: a two-sided Gaussian tail P(|Z| > 6) ≈ 2.0e-9."""


# ------------------------------------------------------------------------------------------------
# Helpers: comparisons, oracles, the feedback each rule prescribes from the raw tensors
# ------------------------------------------------------------------------------------------------


def assert_close(
    actual: Tensor | None,
    expected: Tensor | None,
    rtol: float = EXACT,
    what: str = "",
    floor: float = 0.0,
) -> None:
    """‖actual − expected‖ ≤ rtol·max(‖actual‖, ‖expected‖, floor).

    ``floor`` is the largest gradient of the same backward (:func:`grad_scale`): rounding errors
    scale with the largest intermediates, so a gradient that is small through cancellation (a
    bias gradient summed over a batch) is judged at that scale. Zero tensors match exactly.
    """
    assert (actual is None) == (expected is None), f"{what}: one of the two is None"
    if actual is None:
        return
    assert actual.shape == expected.shape, f"{what}: {actual.shape} ≠ {expected.shape}"
    err = float((actual - expected).norm())
    scale = max(float(actual.norm()), float(expected.norm()), floor)
    assert err <= rtol * scale, f"{what}: relative error {err / max(scale, 1e-300):.3e} > {rtol}"


def grad_scale(grads: dict[str, Tensor | None]) -> float:
    """The largest norm among a backward's gradients (the ``floor`` of :func:`assert_close`)."""
    return max((float(g.norm()) for g in grads.values() if g is not None), default=0.0)


def mask_of(layer: nn.Module, name: str) -> Tensor | float:
    mask = getattr(layer, f"{name}_mask", None)
    return 1.0 if mask is None else mask


def product(B: Tensor, R: Tensor) -> Tensor:
    """(B·R)[o, …] = Σ_m B[o, m] R[m, …] (linear and conv)."""
    return torch.einsum("om,m...->o...", B, R)


def transpose_product(B: Tensor, W: Tensor) -> Tensor:
    """(Bᵀ·W)[m, …] = Σ_o B[o, m] W[o, …] (linear and conv)."""
    return torch.einsum("om,o...->m...", B, W)


def block_support(layer: alignment.FeedbackLayer) -> Tensor:
    """1 on PFA's B blocks (block-diagonal over conv groups), 0 elsewhere."""
    groups = getattr(layer, "groups", 1)
    rows, cols = layer.B.shape[0] // groups, layer.B.shape[1] // groups
    return torch.block_diag(*[torch.ones(rows, cols)] * groups)


def xavier_std(w: Tensor) -> float:
    receptive = w[0, 0].numel()
    return math.sqrt(2.0 / (w.shape[1] * receptive + w.shape[0] * receptive))


def explicit_feedback(layer: alignment.FeedbackLayer) -> Tensor:
    """The feedback the spec's equation prescribes, rebuilt from the layer's raw tensors."""
    name, w = layer.rule.name, layer.weight.detach()
    if name == "bp":
        return w
    if name in ("fa", "kp"):
        return layer.B.detach() * mask_of(layer, "B")
    if name == "usf":
        return torch.sign(w) * xavier_std(w) * mask_of(layer, "feedback")
    if name in ("frsf", "brsf"):
        return (layer.B.detach() * mask_of(layer, "B")).abs() * torch.sign(w)
    if name in ("pfa", "pfa_o"):
        B, R = layer.B.detach() * mask_of(layer, "B"), layer.R.detach() * mask_of(layer, "R")
        return product(B, R)
    raise KeyError(name)


def oracle(
    forward, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor, delta: Tensor
) -> dict[str, Tensor | None]:
    """Autograd on the plain op: e_in with ``feedback`` in place of W; grad_W and grad_b with W."""
    x_leaf = x.detach().requires_grad_(True)
    (e_in,) = torch.autograd.grad(forward(x_leaf, feedback.detach(), None), x_leaf, delta)
    w_leaf = weight.detach().requires_grad_(True)
    b_leaf = None if bias is None else bias.detach().requires_grad_(True)
    leaves = [w_leaf] if b_leaf is None else [w_leaf, b_leaf]
    grads = torch.autograd.grad(forward(x.detach(), w_leaf, b_leaf), leaves, delta)
    return {"input": e_in, "weight": grads[0], "bias": None if bias is None else grads[1]}


def linear_forward(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return F.linear(x, w, b)


def engine_grads(layer: nn.Module, x: Tensor, delta: Tensor) -> dict[str, Tensor | None]:
    """Gradients the engine produces for the error ``delta`` at the layer's output."""
    x_leaf = x.detach().clone().requires_grad_(True)
    named = dict(layer.named_parameters())
    grads = torch.autograd.grad(layer(x_leaf), [x_leaf, *named.values()], delta, allow_unused=True)
    out = {"input": grads[0], **dict(zip(named, grads[1:], strict=True))}
    out.setdefault("bias", None)
    return out


def make_linear(case: LinearCase, rule: str, seed: int, **options) -> alignment.Linear:
    torch.manual_seed(seed)
    return alignment.Linear(case.n_in, case.n_out, case.bias, rule=rule, **options)


def make_conv(case: ConvCase, rule: str, seed: int, **options) -> alignment.Conv2d:
    torch.manual_seed(seed)
    return alignment.Conv2d(**case.kwargs(), rule=rule, **options)


def random_io(shape_in: tuple[int, ...], layer: nn.Module, seed: int) -> tuple[Tensor, Tensor]:
    """An input of ``shape_in`` and a random error δ of the layer's output shape."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(shape_in, generator=gen)
    with torch.no_grad():
        shape_out = layer(x).shape
    return x, torch.randn(shape_out, generator=gen)


def feedback_layers(model: nn.Module) -> list[alignment.FeedbackLayer]:
    return [m for m in model.modules() if isinstance(m, alignment.FeedbackLayer)]


def mlp(widths: tuple[int, ...], act: type[nn.Module] | None = nn.Tanh) -> nn.Sequential:
    modules: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        if i and act is not None:
            modules.append(act())
        modules.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*modules)


def conv_net(case: ConvCase, classes: int = 3) -> nn.Sequential:
    """Conv(case) → tanh → flatten → Linear(classes)."""
    conv = nn.Conv2d(**case.kwargs())
    with torch.no_grad():
        flat = conv(torch.zeros(case.input_shape)).flatten(1).shape[1]
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(flat, classes))


def all_grads(model: nn.Module, x: Tensor, loss_fn) -> dict[str, Tensor | None]:
    x_leaf = x.detach().clone().requires_grad_(True)
    named = dict(model.named_parameters())
    loss = loss_fn(model(x_leaf))
    grads = torch.autograd.grad(loss, [x_leaf, *named.values()], allow_unused=True)
    return {"input": grads[0], **dict(zip(named, grads[1:], strict=True))}


def smooth_loss(y: Tensor, target: Tensor) -> Tensor:
    """A loss whose error depends non-linearly on the output (so δ changes with the weights)."""
    return ((torch.tanh(y) - target) ** 2).sum()


# ------------------------------------------------------------------------------------------------
# Theory property 1: Exact alignment dynamics under SGD (PFA: D = R − BᵀW; KP: D = B − W)
# ------------------------------------------------------------------------------------------------


def sgd(params, schedule: SGDSchedule) -> torch.optim.SGD:
    return torch.optim.SGD(
        params,
        lr=schedule.lr[0],
        momentum=schedule.momentum,
        dampening=schedule.dampening,
        nesterov=schedule.nesterov,
        weight_decay=schedule.weight_decay[0],
    )


def train(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    schedule: SGDSchedule | None,
    steps: int,
    input_shape: tuple[int, ...],
    observe,
    seed: int,
) -> list:
    """``steps`` optimiser steps on fresh random data; ``observe()`` before and after each step.

    The per-step lr and weight decay are set on every param group before each step (one group
    holds W, the bias and R), as a scheduler would.
    """
    gen = torch.Generator().manual_seed(seed + 7)
    seen = [observe()]
    for t in range(steps):
        if schedule is not None:
            for group in optimiser.param_groups:
                group["lr"], group["weight_decay"] = schedule.lr[t], schedule.weight_decay[t]
        x = torch.randn(input_shape, generator=gen)
        y = model(x)
        target = torch.rand(y.shape, generator=gen) * 2 - 1
        optimiser.zero_grad()
        smooth_loss(y, target).backward()
        optimiser.step()
        seen.append(observe())
    return seen


def pfa_terms(layer: alignment.FeedbackLayer) -> tuple[Tensor, Tensor]:
    """(R, BᵀW): D = R − BᵀW (conv: D[m] = R[m] − Σ_o B[o,m] W[o])."""
    return layer.R.detach().clone(), transpose_product(layer.B.detach(), layer.weight.detach())


def kp_terms(layer: alignment.FeedbackLayer) -> tuple[Tensor, Tensor]:
    """(B, W): D = B − W."""
    return layer.B.detach().clone(), layer.weight.detach().clone()


def assert_contracts(history: list[list[tuple[Tensor, Tensor]]], schedule: SGDSchedule) -> None:
    """D_t = c_t·D_0 for every layer and step, c_t from alignment.theory.decay_factors.

    The error is relative to the magnitude of the two terms whose difference D is, ‖R_t‖ + ‖BᵀW_t‖.
    """
    c = decay_factors(
        list(schedule.lr),
        list(schedule.weight_decay),
        schedule.momentum,
        dampening=schedule.dampening,
        nesterov=schedule.nesterov,
    )
    assert len(c) == schedule.steps + 1
    for t, layers in enumerate(history):
        for i, (first, second) in enumerate(layers):
            first0, second0 = history[0][i]
            d_t, d_0 = first - second, first0 - second0
            err = float((d_t - float(c[t]) * d_0).norm())
            scale = float(first.norm() + second.norm())
            assert err <= DYNAMICS * scale, (
                f"layer {i}, step {t}: ‖D_t − c_t D_0‖/scale = {err / scale:.3e}, c_t = {c[t]:.6f}"
            )


@given(case=linear_cases(), k=ks, path=paths, schedule=sgd_schedules(), seed=seeds)
def test_pfa_linear_alignment_dynamics(case, k, path, schedule, seed) -> None:
    layer = make_linear(case, "pfa", seed, k=k, path=path)
    opt = sgd(layer.parameters(), schedule)
    history = train(
        layer, opt, schedule, schedule.steps, case.input_shape, lambda: [pfa_terms(layer)], seed
    )
    assert_contracts(history, schedule)


@given(case=conv_cases(), k=ks, path=paths, schedule=sgd_schedules(), seed=seeds)
def test_pfa_conv_alignment_dynamics(case, k, path, schedule, seed) -> None:
    layer = make_conv(case, "pfa", seed, k=k, path=path)
    opt = sgd(layer.parameters(), schedule)
    history = train(
        layer, opt, schedule, schedule.steps, case.input_shape, lambda: [pfa_terms(layer)], seed
    )
    assert_contracts(history, schedule)


@given(
    widths=mlp_widths(depth=2),
    k=ks,
    path=paths,
    schedule=sgd_schedules(),
    seed=seeds,
    batch=st.integers(1, 4),
)
def test_pfa_two_layer_net_alignment_dynamics(widths, k, path, schedule, seed, batch) -> None:
    torch.manual_seed(seed)
    net = alignment.convert(mlp(widths), "pfa", k=k, path=path)
    layers = feedback_layers(net)
    opt = sgd(net.parameters(), schedule)
    history = train(
        net,
        opt,
        schedule,
        schedule.steps,
        (batch, widths[0]),
        lambda: [pfa_terms(layer) for layer in layers],
        seed,
    )
    assert_contracts(history, schedule)


@given(case=st.one_of(linear_cases(), conv_cases()), schedule=sgd_schedules(), seed=seeds)
def test_kp_alignment_dynamics(case, schedule, seed) -> None:
    """Kolen–Pollack: B − W contracts by the same c_t (B in W's optimiser group)."""
    build = make_linear if isinstance(case, LinearCase) else make_conv
    layer = build(case, "kp", seed)
    assert "B" in dict(layer.named_parameters())
    opt = sgd(layer.parameters(), schedule)
    history = train(
        layer, opt, schedule, schedule.steps, case.input_shape, lambda: [kp_terms(layer)], seed
    )
    assert_contracts(history, schedule)


def _best_fit_residual(d_t: Tensor, d_0: Tensor) -> float:
    """min_c ‖D_t − c D_0‖ / ‖D_t‖: zero iff D_t is a multiple of D_0."""
    c = float((d_t * d_0).sum() / (d_0 * d_0).sum())
    return float((d_t - c * d_0).norm() / d_t.norm())


@pytest.mark.parametrize("optimiser", ["adam", "adamw", "sgd_separate_lr_for_R"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identity_needs_plain_sgd_with_shared_hyperparameters(optimiser: str, seed: int) -> None:
    """Documents theory property 1's assumption: under Adam/AdamW (per-coordinate scaling) or with
    R in its own group (another lr), D_t is no longer a multiple of D_0 — for *any* scalar, not
    just c_t."""
    case = LinearCase(n_in=5, n_out=4, bias=True, lead=(3,))
    layer = make_linear(case, "pfa", seed, k=2)
    others = [p for name, p in layer.named_parameters() if name != "R"]
    if optimiser == "adam":
        opt = torch.optim.Adam(layer.parameters(), lr=0.05, weight_decay=0.1)
    elif optimiser == "adamw":
        opt = torch.optim.AdamW(layer.parameters(), lr=0.05, weight_decay=0.1)
    else:
        opt = torch.optim.SGD(
            [{"params": others}, {"params": [layer.R], "lr": 0.08}], lr=0.05, weight_decay=0.1
        )
    history = train(layer, opt, None, 3, case.input_shape, lambda: pfa_terms(layer), seed)
    d_0 = history[0][0] - history[0][1]
    assert float(d_0.norm()) > 0.1, "R must start away from the fixed point BᵀW"
    residuals = [_best_fit_residual(r - btw, d_0) for r, btw in history[1:]]
    assert max(residuals) > 1e-2, f"{optimiser} unexpectedly kept D_t ∥ D_0: {residuals}"


# ------------------------------------------------------------------------------------------------
# Every rule's backward is its equation (explicit feedback from the raw tensors, autograd oracle)
# ------------------------------------------------------------------------------------------------

LOCAL_RULES = ["bp", "fa", "usf", "frsf", "brsf", "pfa", "pfa_o", "kp"]


@st.composite
def rule_options(draw: st.DrawFn, rule: str) -> dict:
    options: dict = {}
    if rule in ("fa", "usf", "frsf", "brsf", "kp", "pfa", "pfa_o"):
        options["density"] = draw(densities)
    if rule == "pfa":
        options["k"] = draw(ks)
    if rule in ("pfa", "pfa_o"):
        options["path"] = draw(paths)
    return options


@st.composite
def rules_with_options(draw: st.DrawFn) -> tuple[str, dict]:
    rule = draw(st.sampled_from(LOCAL_RULES))
    return rule, draw(rule_options(rule))


def check_backward_is_equation(
    layer: alignment.FeedbackLayer, x: Tensor, delta: Tensor, forward
) -> None:
    # Perturb W so that rules reading W (uSF/frSF/brSF, BP) must use the current W.
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    got = engine_grads(layer, x, delta)
    fb = explicit_feedback(layer)  # after the forward: brSF's B is the draw that backward used
    want = oracle(forward, x, layer.weight, layer.bias, fb, delta)
    for key in ("input", "weight", "bias"):
        assert_close(got[key], want[key], what=key, floor=grad_scale(want))
    assert_close(layer.feedback_matrix(), fb, what="feedback_matrix()")
    if layer.rule.name in ("pfa", "pfa_o"):
        grad_r = transpose_product(layer.B * mask_of(layer, "B"), want["weight"])
        grad_r = grad_r * mask_of(layer, "R")
        assert_close(got["R"], grad_r, what="grad_R")
    if layer.rule.name == "kp":
        assert_close(got["B"], want["weight"] * mask_of(layer, "B"), what="grad_B")


@given(case=linear_cases(), rule=rules_with_options(), seed=seeds)
def test_linear_backward_is_the_rule_equation(case, rule, seed) -> None:
    name, options = rule
    layer = make_linear(case, name, seed, **options)
    x, delta = random_io(case.input_shape, layer, seed)
    check_backward_is_equation(layer, x, delta, linear_forward)


@given(case=conv_cases(), rule=rules_with_options(), seed=seeds)
@example(case=ASYMMETRIC_SAME, rule=("fa", {"density": 1.0}), seed=0)
@example(case=ASYMMETRIC_SAME, rule=("pfa", {"k": 2, "density": 0.5, "path": "two_stage"}), seed=1)
def test_conv_backward_is_the_rule_equation(case, rule, seed) -> None:
    name, options = rule
    layer = make_conv(case, name, seed, **options)
    x, delta = random_io(case.input_shape, layer, seed)
    check_backward_is_equation(layer, x, delta, case.conv)


# ------------------------------------------------------------------------------------------------
# The rules: grad_R = Bᵀ grad_W, the two paths, masks, conv PFA = conv FA with the effective kernel
# ------------------------------------------------------------------------------------------------


def _pfa_layer(case, k, density, path, seed) -> tuple[alignment.FeedbackLayer, object]:
    if isinstance(case, LinearCase):
        return make_linear(case, "pfa", seed, k=k, density=density, path=path), linear_forward
    return make_conv(case, "pfa", seed, k=k, density=density, path=path), case.conv


@given(
    case=st.one_of(linear_cases(), conv_cases()),
    k=ks,
    path=st.sampled_from(["product", "two_stage"]),
    seed=seeds,
)
def test_pfa_grad_r_is_bt_grad_w(case, k, path, seed) -> None:
    """grad_R = Bᵀ grad_W exactly (conv: contraction over the output channel), grad_W = δᵀx."""
    layer, forward = _pfa_layer(case, k, 1.0, path, seed)
    x, delta = random_io(case.input_shape, layer, seed)
    got = engine_grads(layer, x, delta)
    want = oracle(forward, x, layer.weight, layer.bias, layer.weight, delta)
    assert_close(got["weight"], want["weight"], what="grad_W")
    assert_close(got["bias"], want["bias"], what="grad_b", floor=grad_scale(want))
    assert_close(got["R"], transpose_product(layer.B, want["weight"]), what="grad_R")
    assert_close(got["R"], transpose_product(layer.B, got["weight"]), what="grad_R vs engine W")
    assert "B" not in dict(layer.named_parameters())


@given(case=st.one_of(linear_cases(), conv_cases()), k=ks, density=densities, seed=seeds)
def test_pfa_product_and_two_stage_paths_agree(case, k, density, seed) -> None:
    layer, _ = _pfa_layer(case, k, density, "product", seed)
    other = copy.deepcopy(layer)
    other.rule = dataclasses.replace(layer.rule, path="two_stage")
    x, delta = random_io(case.input_shape, layer, seed)
    a, b = engine_grads(layer, x, delta), engine_grads(other, x, delta)
    assert set(a) == set(b)
    for key in a:
        assert_close(a[key], b[key], what=key, floor=grad_scale(a))


@given(
    case=st.one_of(linear_cases(), conv_cases()),
    k=ks,
    density=sparse_densities,
    path=paths,
    seed=seeds,
)
def test_pfa_masks(case, k, density, path, seed) -> None:
    """ρ < 1: masked R entries get zero gradient; the backward applies (B∘M_B)(R∘M_R) — also
    after B and R were overwritten densely (the masks are re-applied at every forward)."""
    layer, forward = _pfa_layer(case, k, density, path, seed)
    buffers = dict(layer.named_buffers())
    assert {"B", "B_mask", "R_mask"} <= set(buffers)
    assert set(layer.state_dict()) >= {"B", "B_mask", "R_mask", "R", "weight"}
    for name in ("B", "R"):
        mask = buffers[f"{name}_mask"]
        assert bool(((mask == 0) | (mask == 1)).all())
    with torch.no_grad():  # dense values everywhere, masked or not (e.g. a dense state_dict)
        layer.R.copy_(torch.randn_like(layer.R))
        layer.B.copy_(torch.randn_like(layer.B) * block_support(layer))
    x, delta = random_io(case.input_shape, layer, seed)
    got = engine_grads(layer, x, delta)
    effective = product(layer.B * layer.B_mask, layer.R.detach() * layer.R_mask)
    want = oracle(forward, x, layer.weight, layer.bias, effective, delta)
    assert_close(got["input"], want["input"], what="e_in")
    assert_close(layer.feedback_matrix(), effective, what="feedback_matrix()")
    assert bool((got["R"][layer.R_mask == 0] == 0).all()), "a masked R entry received a gradient"
    grad_r = transpose_product(layer.B * layer.B_mask, want["weight"]) * layer.R_mask
    assert_close(got["R"], grad_r, what="grad_R")


@given(
    case=st.one_of(linear_cases(), conv_cases()),
    rule=st.sampled_from(["fa", "usf", "frsf"]),
    density=sparse_densities,
    seed=seeds,
)
def test_fixed_feedback_masks_are_reapplied(case, rule, density, seed) -> None:
    """FA / uSF / frSF with ρ < 1: the backward applies feedback ∘ M even after B is overwritten."""
    build = make_linear if isinstance(case, LinearCase) else make_conv
    forward = linear_forward if isinstance(case, LinearCase) else case.conv
    layer = build(case, rule, seed, density=density)
    mask_name = "feedback" if rule == "usf" else "B"
    mask = getattr(layer, f"{mask_name}_mask")
    assert f"{mask_name}_mask" in layer.state_dict()
    if rule != "usf":
        with torch.no_grad():
            layer.B.copy_(torch.randn_like(layer.B))
    x, delta = random_io(case.input_shape, layer, seed)
    got = engine_grads(layer, x, delta)
    w = layer.weight.detach()
    fb = {
        "fa": lambda: layer.B * mask,
        "usf": lambda: torch.sign(w) * xavier_std(w) * mask,
        "frsf": lambda: (layer.B * mask).abs() * torch.sign(w),
    }[rule]()
    want = oracle(forward, x, layer.weight, layer.bias, fb, delta)
    assert_close(got["input"], want["input"], what="e_in")


@given(
    case=st.one_of(linear_cases(), conv_cases()), k=ks, density=densities, path=paths, seed=seeds
)
def test_pfa_equals_fa_with_the_effective_kernel(case, k, density, path, seed) -> None:
    """The rules, conv: the backward applies Σ_m B[o,m]·R[m,…]; PFA = FA with B := that kernel."""
    pfa, forward = _pfa_layer(case, k, density, path, seed)
    build = make_linear if isinstance(case, LinearCase) else make_conv
    fa = build(case, "fa", seed + 1)
    kernel = product(pfa.B * mask_of(pfa, "B"), pfa.R.detach() * mask_of(pfa, "R"))
    with torch.no_grad():
        fa.weight.copy_(pfa.weight)
        if case.bias:
            fa.bias.copy_(pfa.bias)
        fa.B.copy_(kernel)
    x, delta = random_io(case.input_shape, pfa, seed)
    a, b = engine_grads(pfa, x, delta), engine_grads(fa, x, delta)
    want = oracle(forward, x, pfa.weight, pfa.bias, kernel, delta)
    for key in ("input", "weight", "bias"):
        assert_close(a[key], b[key], what=f"pfa vs fa {key}", floor=grad_scale(want))
        assert_close(a[key], want[key], what=f"pfa vs oracle {key}", floor=grad_scale(want))


# ------------------------------------------------------------------------------------------------
# Theory property 2: Fixed point: B·R = W ⇒ PFA is BP; for k > 1, R = BᵀW ⇒ e_in = δ·B·Bᵀ·W
# ------------------------------------------------------------------------------------------------


@st.composite
def nets(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...]]:
    if draw(st.booleans()):
        widths = draw(mlp_widths(depth=3))
        return mlp(widths), (draw(st.integers(1, 4)), widths[0])
    case = draw(conv_cases())
    return conv_net(case), case.input_shape


@given(
    net=nets(),
    variant=st.sampled_from(["pfa_o", "identity"]),
    path=st.sampled_from(["product", "two_stage"]),
    seed=seeds,
)
def test_symmetric_pfa_is_backprop(net, variant, path, seed) -> None:
    """PFA-o with R := BᵀW (so BR = BBᵀW = W) and PFA with B = I, R := W: every update (and the
    error reaching the input) equals BP's, computed by plain torch autograd on the original net."""
    model, input_shape = net
    torch.manual_seed(seed)
    if variant == "pfa_o":
        converted = alignment.convert(model, "pfa_o", path=path)
    else:
        converted = alignment.convert(model, "pfa", k=1, b_init="identity", path=path)
    for layer in feedback_layers(converted):
        with torch.no_grad():
            w = layer.weight
            layer.R.copy_(transpose_product(layer.B, w) if variant == "pfa_o" else w)
        assert_close(layer.feedback_matrix(), layer.weight.detach(), what="B·R = W")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(input_shape, generator=gen)
    target = torch.randn(model(x).shape, generator=gen)
    want = all_grads(model, x, lambda y: smooth_loss(y, target))
    got = all_grads(converted, x, lambda y: smooth_loss(y, target))
    for name, grad in want.items():
        assert_close(got[name], grad, what=name, floor=grad_scale(want))


@given(case=st.one_of(linear_cases(), conv_cases()), k=st.integers(2, 4), path=paths, seed=seeds)
def test_pfa_fixed_point_sends_delta_b_bt_w(case, k, path, seed) -> None:
    """Theory property 2: at the fixed point R = BᵀW (k > 1) the layer sends e_in = δ·B·Bᵀ·W."""
    layer, forward = _pfa_layer(case, k, 1.0, path, seed)
    B, W = layer.B, layer.weight.detach()
    with torch.no_grad():
        layer.R.copy_(transpose_product(B, W))
    x, delta = random_io(case.input_shape, layer, seed)
    got = engine_grads(layer, x, delta)
    if isinstance(case, LinearCase):
        expected = delta @ B @ B.T @ W  # the explicit matrix formula δ·B·Bᵀ·W
    else:
        bbt_w = torch.einsum("om,pm,pikl->oikl", B, B, W)
        expected = oracle(forward, x, W, None, bbt_w, delta)["input"]
    assert_close(got["input"], expected, what="e_in = δ B Bᵀ W")


# ------------------------------------------------------------------------------------------------
# Theory property 3: Spectrum of B Bᵀ on engine-built layers
# ------------------------------------------------------------------------------------------------


def draw_pfa_bs(n_out: int, k: int, density: float, groups: int, draws: int) -> Tensor:
    """``draws`` B matrices from engine-built PFA layers (1×1 convs when groups > 1)."""
    torch.manual_seed(1234 + 97 * n_out + 13 * k + groups + int(100 * density))
    out = []
    for _ in range(draws):
        if groups == 1:
            layer = alignment.Linear(1, n_out, rule="pfa", k=k, density=density)
        else:
            layer = alignment.Conv2d(
                groups, n_out, 1, groups=groups, rule="pfa", k=k, density=density
            )
        out.append(layer.B * mask_of(layer, "B"))
    return torch.stack(out)


@pytest.mark.parametrize(
    ("n_out", "k", "density", "groups"),
    [
        (12, 1, 1.0, 1),
        (12, 4, 1.0, 1),
        (12, 10, 1.0, 1),
        (12, 4, 0.5, 1),
        (12, 3, 1.0, 3),
        (12, 2, 0.3, 2),
    ],
)
def test_random_b_moments_of_b_bt(n_out: int, k: int, density: float, groups: int) -> None:
    """E[BBᵀ] = I, eigenvalue mean 1 and variance ≈ 1/k, with exact finite-size moments.

    Entries b = m·u, m ~ Bernoulli(ρ), u uniform with Var u = 1/(ρ·n) where n = k·N_out/g is a
    block's width: E b² = 1/n and E b⁴ = κ/n² with κ = 9/(5ρ). Hence diag(BBᵀ) has mean 1 and
    variance (κ−1)/n, off-diagonal entries in a block mean 0 and variance 1/n, entries outside
    the diagonal blocks are exactly 0; the mean eigenvalue λ̄ has mean 1 and variance
    (κ−1)/(n·N_out); the eigenvalue variance v has mean (N_b−1)/n + (κ−1)/n·(1 − 1/N_out),
    N_b = N_out/g (→ 1/k for large N_out, Marchenko–Pastur).

    Tolerances: 6 standard errors of the mean over M = 400 draws (analytic for E[BBᵀ] and λ̄,
    sample-based for v). Per check P(false failure) ≈ 2e-9; with the Bonferroni bound over the
    N_out² + 2 checks of one case < 1e-6.
    """
    M = 400
    Bs = draw_pfa_bs(n_out, k, density, groups, M)
    n_b, n = n_out // groups, k * n_out // groups
    kappa = 9.0 / 5.0 / density
    outside = ~torch.block_diag(*[torch.ones(n_b, n)] * groups).bool()
    assert bool((Bs[:, outside] == 0).all()), "B is not block-diagonal over the conv groups"
    gram = Bs @ Bs.mT  # M × N_out × N_out
    block = torch.block_diag(*[torch.ones(n_b, n_b)] * groups).bool()

    eye = torch.eye(n_out)
    se = torch.where(eye.bool(), math.sqrt((kappa - 1) / n / M), math.sqrt(1 / n / M))
    eig = torch.linalg.eigvalsh(gram)  # M × N_out
    v = eig.var(1, unbiased=False)
    expected_v = (n_b - 1) / n + (kappa - 1) / n * (1 - 1 / n_out)
    z = {
        "E[BBᵀ] = I (max over entries)": float(((gram.mean(0) - eye).abs() / se)[block].max()),
        "eigenvalue mean = 1": abs(float(eig.mean()) - 1)
        / math.sqrt((kappa - 1) / (n * n_out) / M),
        "eigenvalue variance": abs(float(v.mean()) - expected_v) / (float(v.std()) / math.sqrt(M)),
    }
    assert max(z.values()) < Z, f"z-scores {z} (variance {float(v.mean()):.4f} vs {expected_v:.4f})"
    if density == 1.0 and groups == 1:  # the finite-size terms are within 10 % of 1/k here
        assert abs(expected_v - 1 / k) < 0.1 / k


@given(case=st.one_of(linear_cases(), conv_cases()), seed=seeds)
def test_orthogonal_b_is_exactly_orthogonal(case, seed) -> None:
    """PFA-o: B Bᵀ = I to 1e-12 (block-diagonal over conv groups), all eigenvalues 1."""
    build = make_linear if isinstance(case, LinearCase) else make_conv
    layer = build(case, "pfa_o", seed)
    B = layer.B
    assert B.shape == (layer.weight.shape[0],) * 2
    assert float((B @ B.T - torch.eye(B.shape[0])).abs().max()) < EXACT
    assert float((B.T @ B - torch.eye(B.shape[0])).abs().max()) < EXACT


# ------------------------------------------------------------------------------------------------
# Theory property 4: Alignment angle vs expansion ratio, with the layers' actual B
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 10])
def test_angle_between_w_and_b_bt_w_follows_k(k: int) -> None:
    """angle(W, BBᵀW) ≈ arccos √(k/(k+1)) for the B of engine-built PFA layers (N_out = 64,
    N_in = 128, W the layer's own, independent of B).

    Finite-size prediction: cos θ ≈ 1/√E[λ²], E[λ²] = 1 + (N_out−1)/N_mid + (κ−1)/N_mid, κ = 9/5
    (within 0.05° of the asymptotic value here). Tolerance: 6 standard errors of the mean over 100
    draws (≈ 0.2–0.35°) plus 0.1° for the ratio-of-means approximation (its bias, measured over
    400 draws, is < 0.03° ± 0.03° at these sizes); P(false failure) < 1e-8.
    """
    n_out, n_in, draws = 64, 128, 100
    torch.manual_seed(4321 + k)
    angles = []
    for _ in range(draws):
        layer = alignment.Linear(n_in, n_out, rule="pfa", k=k)
        W = layer.weight.detach()
        angles.append(float(angle(W, layer.B @ layer.B.T @ W)))
    angles_t = torch.tensor(angles)
    n_mid = k * n_out
    finite = math.degrees(math.acos(1 / math.sqrt(1 + (n_out - 1) / n_mid + 0.8 / n_mid)))
    asymptotic = math.degrees(math.acos(math.sqrt(k / (k + 1))))
    tol = Z * float(angles_t.std()) / math.sqrt(draws) + 0.1
    assert abs(float(angles_t.mean()) - finite) < tol, (float(angles_t.mean()), finite, tol)
    assert abs(finite - asymptotic) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize(("k", "paper"), [(1, 45.00), (10, 17.55), (100, 5.71)])
def test_angle_at_the_papers_monte_carlo_sizes(k: int, paper: float) -> None:
    """Theory property 4 / Fig. 3: N_out = 100, N_in = 256, 100 draws of engine-built PFA layers
    match 45.00° / 17.55° / 5.71° within ~0.1°. Tolerance 6 standard errors (0.03–0.2°) plus
    0.05° for the finite-size and ratio-of-means terms; P(false failure) < 1e-8."""
    torch.manual_seed(2024 + k)
    angles = []
    for _ in range(100):
        layer = alignment.Linear(256, 100, bias=False, rule="pfa", k=k)
        W = layer.weight.detach()
        angles.append(float(angle(W, layer.B @ (layer.B.T @ W))))
    t = torch.tensor(angles)
    assert abs(math.degrees(math.acos(math.sqrt(k / (k + 1)))) - paper) < 0.005
    tol = Z * float(t.std()) / math.sqrt(len(angles)) + 0.05
    assert abs(float(t.mean()) - paper) < tol, (float(t.mean()), paper, tol)


# ------------------------------------------------------------------------------------------------
# Theory property 6: Initial values on engine-built layers
# ------------------------------------------------------------------------------------------------


def _xavier_layer(kind: str, rule: str, **options) -> alignment.FeedbackLayer:
    """The paper's pipeline: a torch layer, Xavier-uniform W (as alignment.models.init_weights
    does), then converted, so the rule draws its feedback tensors for (and after) that W."""
    module = nn.Linear(48, 16) if kind == "linear" else nn.Conv2d(12, 8, 3, groups=2)
    nn.init.xavier_uniform_(module.weight)
    return alignment.convert(module, rule, **options)


def _fans(layer: alignment.FeedbackLayer) -> tuple[int, int]:
    """(N_in, N_out), channels for conv: C_in/groups and C_out."""
    return layer.weight.shape[1], layer.weight.shape[0]


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("rule", ["pfa", "pfa_o"])
def test_initial_path_norm_ratio(kind: str, rule: str) -> None:
    """‖BR‖/‖W‖ at Xavier init ≈ √((N_in+N_out)/(N_in+k·N_out)) (PFA, k = 4); 1 for PFA-o.

    E‖BR‖² / E‖W‖² is exactly the squared prediction, so the per-draw squared ratio is tested with
    6 standard errors over 40 draws (P(false failure) ≈ 2e-9; the ratio-of-means bias, O(1/N),
    is far below the tolerance).
    """
    k = 4 if rule == "pfa" else 1
    torch.manual_seed(99 + len(kind) + k)
    options = {"k": k} if rule == "pfa" else {}
    ratios = []
    for _ in range(40):
        layer = _xavier_layer(kind, rule, **options)
        ratios.append(float(layer.feedback_matrix().norm() / layer.weight.detach().norm()) ** 2)
    n_in, n_out = _fans(layer)
    expected = (n_in + n_out) / (n_in + k * n_out)
    r = torch.tensor(ratios)
    z = abs(float(r.mean()) - expected) / (float(r.std()) / math.sqrt(len(ratios)))
    assert z < Z, f"squared ratio {float(r.mean()):.4f} vs {expected:.4f} (z = {z:.2f})"


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("rule", ["pfa", "pfa_o", "fa"])
def test_initial_alignment_of_random_feedback_is_90_degrees(kind: str, rule: str) -> None:
    """FA and PFA/PFA-o at init: cos θ has mean 0 and standard deviation ≈ 1/√N given the
    feedback (W i.i.d. and independent of it): |cos θ| < 6/√N for each of 20 draws
    (P(false failure) < 20·2e-9)."""
    torch.manual_seed(7 + len(kind) + len(rule))
    for _ in range(20):
        layer = _xavier_layer(kind, rule)
        W = layer.weight.detach()
        cos = math.cos(math.radians(float(angle(layer.feedback_matrix(), W))))
        assert abs(cos) < Z / math.sqrt(W.numel()), cos


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_initial_usf_alignment_is_30_degrees(kind: str) -> None:
    """uSF with Xavier-uniform W: angle = arccos(√3/2) = 30° and norm ratio 1 (6 s.e. over 30
    draws, P(false failure) ≈ 4e-9 for the two checks)."""
    torch.manual_seed(11 + len(kind))
    angles, ratios = [], []
    for _ in range(30):
        layer = _xavier_layer(kind, "usf")
        W, fb = layer.weight.detach(), layer.feedback_matrix()
        angles.append(float(angle(fb, W)))
        ratios.append(float(fb.norm() / W.norm()))
    for values, expected in ((angles, 30.0), (ratios, 1.0)):
        t = torch.tensor(values)
        z = abs(float(t.mean()) - expected) / (float(t.std()) / math.sqrt(len(values)))
        assert z < Z, (float(t.mean()), expected, z)


# ------------------------------------------------------------------------------------------------
# Theory property 7: Sign symmetry: the feedback always has a positive inner product with W
# ------------------------------------------------------------------------------------------------


@given(
    case=st.one_of(linear_cases(), conv_cases()),
    rule=st.sampled_from(["usf", "frsf", "brsf"]),
    density=densities,
    seed=seeds,
)
def test_sign_symmetry_angle_below_90(case, rule, density, seed) -> None:
    build = make_linear if isinstance(case, LinearCase) else make_conv
    layer = build(case, rule, seed, density=density)
    with torch.no_grad():  # a W the rule has never seen: the feedback must follow the current W
        layer.weight.copy_(torch.randn_like(layer.weight))
    x, _ = random_io(case.input_shape, layer, seed)
    layer(x.requires_grad_(True))
    fb, W = layer.feedback_matrix(), layer.weight.detach()
    assume(bool(fb.ne(0).any()))
    assert bool((torch.sign(fb)[fb != 0] == torch.sign(W)[fb != 0]).all())
    assert float((fb * W).sum()) > 0
    assert float(angle(fb, W)) < 90.0


# ------------------------------------------------------------------------------------------------
# Theory property 8 / the rules: FA's first-layer feedback is never used; DFA
# ------------------------------------------------------------------------------------------------


@given(widths=mlp_widths(depth=3), density=densities, seed=seeds, batch=st.integers(1, 4))
def test_fa_first_layer_feedback_changes_no_update(widths, density, seed, batch) -> None:
    torch.manual_seed(seed)
    net = alignment.convert(mlp(widths), "fa", density=density)
    other = copy.deepcopy(net)
    with torch.no_grad():
        other[0].B.copy_(torch.randn_like(other[0].B) * 10)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, widths[0], generator=gen)
    target = torch.randn(batch, widths[-1], generator=gen)
    grads = []
    for model in (net, other):
        model.zero_grad()
        smooth_loss(model(x), target).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name


def _overwrite_d(layers: list[alignment.FeedbackLayer]) -> None:
    """Dense new values in every D (masked entries included): the mask must be re-applied."""
    with torch.no_grad():
        for layer in layers:
            assert ("D_mask" in layer.state_dict()) == hasattr(layer, "D_mask")
            layer.D.copy_(torch.randn_like(layer.D))


def _dfa_nets(widths: tuple[int, ...], act, seed: int, density: float = 1.0):
    torch.manual_seed(seed)
    reference = mlp(widths, act)
    return reference, alignment.convert(reference, "dfa", density=density)


@given(widths=mlp_widths(depth=3), density=densities, seed=seeds, batch=st.integers(1, 4))
def test_dfa_output_layer_update_equals_bp(widths, density, seed, batch) -> None:
    reference, net = _dfa_nets(widths, nn.Tanh, seed, density)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, widths[0], generator=gen)
    labels = torch.randint(widths[-1], (batch,), generator=gen)
    want = all_grads(reference, x, lambda y: F.cross_entropy(y, labels))
    got = all_grads(net, x, lambda y: F.cross_entropy(y, labels))
    last = len(reference) - 1
    for name in (f"{last}.weight", f"{last}.bias"):
        assert_close(got[name], want[name], what=name, floor=grad_scale(want))


@given(widths=mlp_widths(depth=3), seed=seeds, batch=st.integers(1, 4))
def test_dfa_deep_linear_net_with_true_maps_is_bp(widths, seed, batch) -> None:
    """No nonlinearity; D_l := W_L ⋯ W_l (the true logits-to-input map of layer l) ⇒ DFA is BP."""
    reference, net = _dfa_nets(widths, None, seed)
    layers = feedback_layers(net)
    with torch.no_grad():
        for i, layer in enumerate(layers):
            true_map = torch.eye(widths[-1])
            for later in reversed(layers[i:]):
                true_map = true_map @ later.weight
            layer.D.copy_(true_map)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, widths[0], generator=gen)
    labels = torch.randint(widths[-1], (batch,), generator=gen)
    want = all_grads(reference, x, lambda y: F.cross_entropy(y, labels))
    got = all_grads(net, x, lambda y: F.cross_entropy(y, labels))
    for name, grad in want.items():
        assert_close(got[name], grad, what=name, floor=grad_scale(want))


@given(widths=mlp_widths(depth=3), density=densities, seed=seeds, batch=st.integers(1, 4))
def test_dfa_mlp_matches_explicit_formula(widths, density, seed, batch) -> None:
    """δ_L = e_out; δ_l = (e_out·D_{l+1}) ⊙ tanh'(z_l); grad_W_l = δ_lᵀ x_l; e_in(x) = e_out·D_1,
    with D ∘ M_D re-applied after D is overwritten densely."""
    _, net = _dfa_nets(widths, nn.Tanh, seed, density)
    layers = feedback_layers(net)
    _overwrite_d(layers)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, widths[0], generator=gen)
    labels = torch.randint(widths[-1], (batch,), generator=gen)
    inputs, h = [], x
    for i, layer in enumerate(layers):
        inputs.append(h)
        z = F.linear(h, layer.weight.detach(), layer.bias.detach())
        h = torch.tanh(z) if i < len(layers) - 1 else z
    logits = h.requires_grad_(True)
    (e_out,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    Ds = [layer.D * mask_of(layer, "D") for layer in layers]
    for layer, D in zip(layers, Ds, strict=True):  # the metric reports what the backward uses
        assert torch.equal(layer.feedback_matrix(), D)
    got = all_grads(net, x, lambda y: F.cross_entropy(y, labels))
    for i in range(len(layers)):
        if i == len(layers) - 1:
            delta = e_out
        else:
            delta = (e_out @ Ds[i + 1]) * (1 - inputs[i + 1] ** 2)
        floor = grad_scale(got)
        assert_close(got[f"{2 * i}.weight"], delta.T @ inputs[i], what=f"W {i}", floor=floor)
        assert_close(got[f"{2 * i}.bias"], delta.sum(0), what=f"b {i}", floor=floor)
    assert_close(got["input"], e_out @ Ds[0], what="e_in", floor=grad_scale(got))


@given(case=conv_cases(), density=densities, seed=seeds)
@example(case=ASYMMETRIC_SAME, density=1.0, seed=0)
def test_dfa_conv_net_matches_explicit_formula(case, density, seed) -> None:
    """1×1 conv → tanh → conv(case) → tanh → flatten → linear. The error reaching conv(case)'s
    input is conv2d_input(D, e_out tiled over its output grid) with a dense D (oracle: autograd
    of F.conv2d with D for W, groups 1)."""
    classes = 3
    torch.manual_seed(seed)
    conv = nn.Conv2d(**case.kwargs())
    with torch.no_grad():
        out_shape = conv(torch.zeros(case.input_shape)).shape
    reference = nn.Sequential(
        nn.Conv2d(2, case.in_channels, 1),
        nn.Tanh(),
        conv,
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(math.prod(out_shape[1:]), classes),
    )
    net = alignment.convert(reference, "dfa", density=density)
    c1, c2, lin = feedback_layers(net)
    _overwrite_d([c1, c2, lin])
    assert c2.D.shape == (classes, case.in_channels, *case.kernel_size)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((case.batch, 2, case.height, case.width), generator=gen)
    labels = torch.randint(classes, (case.batch,), generator=gen)

    h1 = torch.tanh(F.conv2d(x, c1.weight.detach(), c1.bias.detach()))
    w2, b2 = c2.weight.detach(), None if c2.bias is None else c2.bias.detach()
    h2 = torch.tanh(case.conv(h1, w2, b2))
    logits = F.linear(h2.flatten(1), lin.weight.detach(), lin.bias.detach()).requires_grad_(True)
    (e_out,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)

    d_lin = (e_out @ (lin.D * mask_of(lin, "D"))).reshape(h2.shape) * (1 - h2**2)
    tiled = e_out[:, :, None, None].expand(-1, -1, *h2.shape[-2:])
    d2 = c2.D * mask_of(c2, "D")
    assert torch.equal(c2.feedback_matrix(), d2)
    e_h1 = oracle(lambda a, w, b: case.conv(a, w, b, groups=1), h1, d2, None, d2, tiled)["input"]
    d_c1 = e_h1 * (1 - h1**2)
    want2 = oracle(case.conv, h1, w2, b2, w2, d_lin)
    want1 = oracle(F.conv2d, x, c1.weight, c1.bias, c1.weight, d_c1)

    got = all_grads(net, x, lambda y: F.cross_entropy(y, labels))
    floor = grad_scale(got)
    assert_close(got["5.weight"], e_out.T @ h2.flatten(1), what="linear weight", floor=floor)
    assert_close(got["2.weight"], want2["weight"], what="conv(case) weight", floor=floor)
    assert_close(got.get("2.bias"), want2["bias"], what="conv(case) bias", floor=floor)
    assert_close(got["0.weight"], want1["weight"], what="1×1 conv weight", floor=floor)
    assert_close(got["0.bias"], want1["bias"], what="1×1 conv bias", floor=floor)
