"""The recorded quantities against explicit formulas, in float64, on small tanh MLPs.

Network: x → h1 = x W1ᵀ + b1 → tanh → h2 → tanh → z (logits), layers "0", "2", "4". With
S_l[n] = diag(1 − tanh²(h_l[n])), the true Jacobians of the logits w.r.t. the layer outputs are
W3 S2 W2 S1 (w.r.t. h1), W3 S2 (w.r.t. h2) and I; the feedback ones replace each W by the rule's
feedback (FA: B, PFA: B·R) or, for DFA, are D_{l+1} S_l.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignment
from alignment.metrics import angle, norm_ratio
from alignment.recording import schedules
from alignment.recording.context import StepContext
from alignment.recording.quantities.common import compare

ALIGNMENT_ANGLES = ("feedback_alignment", "grad_alignment", "delta_alignment", "jacobian_alignment")
LAYERS = ("0", "2", "4")

pytestmark = pytest.mark.filterwarnings("ignore::alignment.recording.FewRecordsWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one intra-op thread avoids OpenMP synchronisation, which costs
    far more than the work itself (100× on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tanh_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)
    ).double()


def data(seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    xp = torch.randn(6, 5, generator=g, dtype=torch.float64)
    yp = torch.randint(0, 3, (6,), generator=g)
    return x, y, xp, yp


def record_once(net: nn.Module, run_dir, **kwargs) -> object:
    """One record of every quantity (raw tensors of every layer) at the current weights."""
    x, y, xp, yp = data()
    options = {
        "probe": (xp, yp),
        "schedule": schedules.always,
        "jacobian_schedule": schedules.always,
        "raw_layers": "all",
    }
    with alignment.Recorder(net, run_dir, **(options | kwargs)) as rec:
        rec.step(x, y)
    return alignment.open_run(run_dir, raw=True)


def slopes(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S1, S2 per sample: (N, 4, 4) diagonal matrices of tanh'."""
    with torch.no_grad():
        h1 = net[0](x)
        h2 = net[2](torch.tanh(h1))
    return torch.diag_embed(1 - torch.tanh(h1) ** 2), torch.diag_embed(1 - torch.tanh(h2) ** 2)


def explicit_jacobians(mats: list[torch.Tensor], s1, s2) -> dict[str, torch.Tensor]:
    """N × C × out Jacobians w.r.t. h1, h2, z through the matrices (W1, W2, W3) given."""
    _, m2, m3 = mats
    n = s1.shape[0]
    return {
        "0": m3 @ s2 @ m2 @ s1,
        "2": m3 @ s2,
        "4": torch.eye(3, dtype=torch.float64).expand(n, 3, 3),
    }


def degrees_rows(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a, b = a.reshape(a.shape[0], -1).numpy(), b.reshape(b.shape[0], -1).numpy()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(degrees_rows(a.reshape(1, -1), b.reshape(1, -1))[0])


# ---------------------------------------------------------------------- exact zeros
def test_bp_reads_exactly_zero_degrees_and_ratio_one(tmp_path) -> None:
    ds = record_once(alignment.convert(tanh_mlp(), "bp"), tmp_path)
    for name in ALIGNMENT_ANGLES:
        values = ds[name].values
        assert np.all(values == 0.0), (name, values)
    assert np.all(ds["feedback_norm_ratio"].values == 1.0)
    np.testing.assert_array_equal(ds["jacobian_sv_true"].values, ds["jacobian_sv_fb"].values)
    np.testing.assert_array_equal(ds["grad_norm"].values, ds["grad_bp_norm"].values)


def test_bp_through_the_bp_copy_also_reads_zero(tmp_path, monkeypatch) -> None:
    """Without the all-BP shortcut the rule passes and the BP copy's passes agree bitwise."""
    monkeypatch.setattr("alignment.recording.context.BP", type(None))
    ds = record_once(alignment.convert(tanh_mlp(), "bp"), tmp_path)
    for name in ALIGNMENT_ANGLES:
        assert np.all(ds[name].values == 0.0), name


def test_fa_with_b_equal_w_reads_zero(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(), "fa")
    with torch.no_grad():
        for name in LAYERS:
            net.get_submodule(name).B.copy_(net.get_submodule(name).weight)
    ds = record_once(net, tmp_path)
    for name in ALIGNMENT_ANGLES:
        np.testing.assert_allclose(ds[name].values, 0.0, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ds["feedback_norm_ratio"].values, 1.0, rtol=1e-12)


@pytest.mark.parametrize("path", ["product", "two_stage"])
def test_pfa_o_with_r_equal_bt_w_reads_zero(tmp_path, path: str) -> None:
    net = alignment.convert(tanh_mlp(), "pfa_o", path=path)
    with torch.no_grad():
        for name in LAYERS:
            layer = net.get_submodule(name)
            layer.R.copy_(layer.B.T @ layer.weight)
    ds = record_once(net, tmp_path)
    for name in ALIGNMENT_ANGLES:
        np.testing.assert_allclose(ds[name].values, 0.0, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ds["feedback_residual"].values, 0.0, atol=1e-12)
    eig = ds["bbt_eigenvalues"].values
    np.testing.assert_allclose(eig[np.isfinite(eig)], 1.0, rtol=1e-12)
    assert np.isfinite(eig).sum() == 4 + 4 + 3  # NaN-padded to the widest layer


# ---------------------------------------------------------------------- independent values
def manual_grads(net: nn.Module, feedback: list[torch.Tensor], x, y) -> list[torch.Tensor]:
    """grad_W of the mean cross-entropy when the backward uses ``feedback`` (W for BP)."""
    with torch.no_grad():
        w = [net[i].weight for i in (0, 2, 4)]
        b = [net[i].bias for i in (0, 2, 4)]
        a1 = torch.tanh(x @ w[0].T + b[0])
        a2 = torch.tanh(a1 @ w[1].T + b[1])
        z = a2 @ w[2].T + b[2]
        e = (torch.softmax(z, 1) - F.one_hot(y, 3).double()) / x.shape[0]
        d2 = (e @ feedback[2]) * (1 - a2**2)
        d1 = (d2 @ feedback[1]) * (1 - a1**2)
        return [d1.T @ x, d2.T @ a1, e.T @ a2]


def test_fa_grad_alignment_matches_an_independent_computation(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(3), "fa")
    x, y, _, _ = data()
    layers = [net.get_submodule(n) for n in LAYERS]
    fa = manual_grads(net, [m.B for m in layers], x, y)
    bp = manual_grads(net, [m.weight for m in layers], x, y)
    ds = record_once(net, tmp_path)
    expected = [degrees(a, b) for a, b in zip(fa, bp, strict=True)]
    np.testing.assert_allclose(ds["grad_alignment"].values[0], expected, atol=1e-5)
    norms = [float(g.norm()) for g in fa]
    np.testing.assert_allclose(ds["grad_norm"].values[0], norms, rtol=1e-12)
    np.testing.assert_allclose(ds["grad_bp_norm"].values[0], [float(g.norm()) for g in bp])
    for name, g in zip(LAYERS, fa, strict=True):
        np.testing.assert_allclose(ds[f"update__{name}"].values[0], g.numpy(), rtol=1e-12)
    assert 0 < expected[0] < 180 and expected[2] == pytest.approx(0.0, abs=1e-5)


def feedback_mats(net: nn.Module, rule: str) -> list[torch.Tensor]:
    layers = [net.get_submodule(n) for n in LAYERS]
    if rule == "pfa":
        return [(m.B @ m.R).detach() for m in layers]
    return [m.B for m in layers]


@pytest.mark.parametrize("rule", ["fa", "dfa", "pfa"])
def test_feedback_jacobians_match_explicit_matrix_products(tmp_path, rule: str) -> None:
    options = {"k": 3} if rule == "pfa" else {}
    net = alignment.convert(tanh_mlp(4), rule, **options)
    _, _, xp, _ = data()
    s1, s2 = slopes(net, xp)
    w = [net.get_submodule(n).weight.detach() for n in LAYERS]
    true = explicit_jacobians(w, s1, s2)
    if rule == "dfa":
        d = [net.get_submodule(n).D for n in LAYERS]
        fb = {"0": d[1] @ s1, "2": d[2] @ s2, "4": true["4"]}
    else:
        fb = explicit_jacobians(feedback_mats(net, rule), s1, s2)
    ds = record_once(net, tmp_path)
    for i, name in enumerate(LAYERS):
        got_fb = ds[f"jacobian_fb__{name}"].values[0]
        got_true = ds[f"jacobian_true__{name}"].values[0]
        np.testing.assert_allclose(got_fb, fb[name].numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got_true, true[name].numpy(), rtol=1e-10, atol=1e-12)
        expected = degrees_rows(fb[name], true[name])
        np.testing.assert_allclose(ds["jacobian_alignment"].values[0, i], expected, atol=1e-5)
        sv = np.linalg.svd(fb[name].numpy(), compute_uv=False).mean(0)
        np.testing.assert_allclose(ds["jacobian_sv_fb"].values[0, i, : sv.size], sv, rtol=1e-8)


def test_delta_alignment_equals_e_out_times_the_jacobians(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(5), "fa")
    _, _, xp, yp = data()
    ds = record_once(net, tmp_path)
    with torch.no_grad():
        e_out = torch.softmax(net(xp), 1) - F.one_hot(yp, 3).double()
    for i, name in enumerate(LAYERS):
        fb = torch.from_numpy(ds[f"jacobian_fb__{name}"].values[0])
        true = torch.from_numpy(ds[f"jacobian_true__{name}"].values[0])
        rule = torch.einsum("nc,nco->no", e_out, fb)
        bp = torch.einsum("nc,nco->no", e_out, true)
        np.testing.assert_allclose(
            ds["delta_alignment"].values[0, i], degrees_rows(rule, bp), atol=1e-5
        )


def test_dfa_feedback_alignment_compares_d_with_the_mean_input_jacobian(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(6), "dfa")
    x, y, xp, yp = data()
    rec = alignment.Recorder(net, tmp_path, probe=(xp, yp), schedule=schedules.never)
    ctx = StepContext(rec.net, x, y, F.cross_entropy, rec.probe)
    for name in LAYERS:  # for a linear layer the feedback map e_out → e_in is exactly D
        torch.testing.assert_close(ctx.dfa_maps.fb[name], net.get_submodule(name).D, rtol=0, atol=0)
    s1, s2 = slopes(net, xp)
    w = [net.get_submodule(n).weight.detach() for n in LAYERS]
    means = {
        "0": (w[2] @ s2 @ w[1] @ s1 @ w[0]).mean(0),
        "2": (w[2] @ s2 @ w[1]).mean(0),
        "4": w[2],
    }
    rec.step(x, y, step=0, test_accuracy=0.5)
    rec.close()
    ds = alignment.open_run(tmp_path)
    for i, name in enumerate(LAYERS):
        d = net.get_submodule(name).D
        assert ds["feedback_alignment"].values[0, i] == pytest.approx(
            degrees(d, means[name]), abs=1e-5
        )
        ratio = float(d.norm() / means[name].norm())
        assert ds["feedback_norm_ratio"].values[0, i] == pytest.approx(ratio, rel=1e-10)


def test_feedback_alignment_is_the_angle_between_feedback_and_w(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(7), "pfa", k=2)
    ds = record_once(net, tmp_path)
    torch.set_grad_enabled(False)
    for i, name in enumerate(LAYERS):
        layer = net.get_submodule(name)
        br = layer.B @ layer.R
        assert ds["feedback_alignment"].values[0, i] == pytest.approx(
            degrees(br, layer.weight.detach()), abs=1e-5
        )
        assert ds["feedback_norm_ratio"].values[0, i] == pytest.approx(
            float(br.norm() / layer.weight.norm())
        )
        residual = layer.R - layer.B.T @ layer.weight
        assert ds["feedback_residual"].values[0, i] == pytest.approx(
            float(residual.norm()), rel=1e-10
        )
        rel = float(residual.norm() / (layer.B.T @ layer.weight).norm())
        assert ds["feedback_residual_rel"].values[0, i] == pytest.approx(rel, rel=1e-10)
        eig = np.linalg.eigvalsh((layer.B @ layer.B.T).numpy())
        np.testing.assert_allclose(ds["bbt_eigenvalues"].values[i, : eig.size], eig, rtol=1e-10)
    torch.set_grad_enabled(True)


def test_kp_residual_is_b_minus_w(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(8), "kp")
    ds = record_once(net, tmp_path)
    assert "bbt_eigenvalues" not in ds
    for i, name in enumerate(LAYERS):
        layer = net.get_submodule(name)
        diff = float((layer.B - layer.weight).detach().norm())
        assert ds["feedback_residual"].values[0, i] == pytest.approx(diff, rel=1e-10)
        assert ds["feedback_residual_rel"].values[0, i] == pytest.approx(
            diff / float(layer.weight.detach().norm())
        )


def test_compare_is_alignment_metrics_angle_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 20, generator=g), torch.randn(30, 20, generator=g)
    theta, ratio, na, nb = compare(a, b)
    assert (na, nb) == (float(a.double().norm()), float(b.double().norm()))
    assert theta == pytest.approx(float(angle(a.double(), b.double())), rel=1e-13, abs=1e-12)
    # small angles keep their precision (Kahan's form, not arccos of a dot product)
    tiny = a + 1e-6 * b
    expected = float(angle(a.double(), tiny.double()))
    assert 0 < expected < 1e-3
    assert compare(a, tiny)[0] == pytest.approx(expected, rel=1e-9)
    assert ratio == pytest.approx(float(norm_ratio(a.double(), b.double())))
    assert compare(a, a)[:2] == (0.0, 1.0)
    assert math.isnan(compare(a, torch.zeros_like(a))[0])
    assert math.isnan(compare(None, a)[0])


# ---------------------------------------------------------------------- network level
def test_network_scalars_and_forced_records(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(), "fa")
    x, y, xp, yp = data()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, weight_decay=3e-4)
    with torch.no_grad():
        logits = net(x)
    rec = alignment.Recorder(
        net,
        tmp_path,
        probe=(xp, yp),
        optimizer=opt,
        schedule=schedules.at([0]),
        jacobian_schedule=schedules.never,
    )
    assert rec.step(x, y)  # step 0: on the schedule
    assert not rec.step(x, y)  # step 1: off it
    assert rec.step(x, y, test_accuracy=0.25, test_loss=1.5)  # step 2: forced by the scalars
    with pytest.raises(ValueError, match="unknown scalar"):
        rec.step(x, y, accuracy=1.0)
    rec.close()
    ds = alignment.open_run(tmp_path)
    assert list(ds["step"].values) == [0, 2]
    assert ds["loss"].values[0] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-12)
    accuracy = float((logits.argmax(1) == y).double().mean())
    assert ds["train_accuracy"].values[0] == pytest.approx(accuracy)
    np.testing.assert_allclose(ds["lr"].values, 0.05)
    np.testing.assert_allclose(ds["weight_decay"].values, 3e-4)
    assert np.isnan(ds["test_accuracy"].values[0]) and ds["test_accuracy"].values[1] == 0.25
    assert "jacobian_alignment" not in ds
    for name in ds.data_vars:
        assert {"long_name", "units", "description"} <= set(ds[name].attrs)


# ---------------------------------------------------------------------- predictions
def spectrum_oracle(b: np.ndarray) -> tuple[float, float]:
    """Dense PFA at its fixed point: cos θ = mean λ/√(mean λ²), ratio √(mean λ²), λ of B·Bᵀ."""
    eig = np.linalg.eigvalsh(b @ b.T)
    m1, m2 = eig.mean(), (eig**2).mean()
    return float(np.degrees(np.arccos(m1 / np.sqrt(m2)))), float(np.sqrt(m2))


def test_pfa_prediction_is_the_realised_spectrum_formula(tmp_path) -> None:
    net = alignment.convert(tanh_mlp(9), "pfa", k=2)
    ds = record_once(net, tmp_path)
    for i, name in enumerate(LAYERS):
        b = net.get_submodule(name).B.numpy()
        angle, ratio = spectrum_oracle(b)
        assert ds["feedback_alignment_predicted"].values[0, i] == pytest.approx(angle, rel=1e-10)
        assert ds["feedback_norm_ratio_predicted"].values[0, i] == pytest.approx(ratio, rel=1e-10)
        assert ds["feedback_alignment_predicted"].attrs["units"] == "deg"


def test_pfa_prediction_matches_the_measured_angle_at_the_fixed_point(tmp_path) -> None:
    """R at its fixed point BᵀW for a wide W with i.i.d. entries: the measured path alignment is
    the prediction (the angle of one W differs by O(1/√(N_out·N_in)))."""
    torch.manual_seed(0)
    net = alignment.convert(nn.Sequential(nn.Linear(400, 8), nn.Tanh(), nn.Linear(8, 3)), "pfa")
    layer = net[0]
    with torch.no_grad():
        layer.R.copy_(layer.B.T @ layer.weight)
    x, y = torch.randn(6, 400), torch.randint(0, 3, (6,))
    with alignment.Recorder(
        net, tmp_path, probe=(x, y), schedule=schedules.always, min_records=0
    ) as rec:
        rec.step(x, y)
    ds = alignment.open_run(tmp_path)
    measured = ds["feedback_alignment"].values[0, 0]
    predicted = ds["feedback_alignment_predicted"].values[0, 0]
    assert measured == pytest.approx(predicted, abs=0.5)
    assert 5.0 < predicted < 40.0  # k = 10 at N_out = 8: finite-size, not the 17.55° limit
    ratio = ds["feedback_norm_ratio"].values[0, 0]
    assert ratio == pytest.approx(ds["feedback_norm_ratio_predicted"].values[0, 0], rel=0.02)


def test_sparse_pfa_prediction_against_a_monte_carlo_over_w_and_the_mask() -> None:
    from alignment.theory import realised_path_alignment

    g = torch.Generator().manual_seed(3)
    rho, n_out, n_mid, n_in, draws = 0.5, 6, 12, 50, 4000
    b = torch.randn(n_out, n_mid, generator=g, dtype=torch.float64)
    b = b * (torch.rand(n_out, n_mid, generator=g, dtype=torch.float64) < rho)
    w = torch.randn(draws, n_out, n_in, generator=g, dtype=torch.float64)
    mask = torch.rand(draws, n_mid, n_in, generator=g, dtype=torch.float64) < rho
    f = b @ (mask * (b.T @ w))
    inner = (w * f).sum((1, 2)).mean() / (w * w).sum((1, 2)).mean()
    square = (f * f).sum((1, 2)).mean() / (w * w).sum((1, 2)).mean()
    expected = math.degrees(math.acos(float(inner / square.sqrt())))
    angle, ratio = realised_path_alignment(b.numpy(), rho)
    assert angle == pytest.approx(expected, abs=0.3)
    assert ratio == pytest.approx(float(square.sqrt()), rel=0.01)
    assert realised_path_alignment(b.numpy(), 1.0) == pytest.approx(spectrum_oracle(b.numpy()))


def test_usf_prediction_is_exact_and_fa_bp_dfa_predictions(tmp_path) -> None:
    expected = {"usf": None, "fa": (90.0, math.nan), "bp": (0.0, 1.0), "dfa": (math.nan,) * 2}
    for rule, values in expected.items():
        ds = record_once(alignment.convert(tanh_mlp(10), rule), tmp_path / rule)
        angle = ds["feedback_alignment_predicted"].values[0]
        ratio = ds["feedback_norm_ratio_predicted"].values[0]
        if values is None:  # uSF: s·sign(W), so the prediction from W is the measurement
            np.testing.assert_allclose(angle, ds["feedback_alignment"].values[0], atol=1e-9)
            np.testing.assert_allclose(ratio, ds["feedback_norm_ratio"].values[0], rtol=1e-12)
            w = tanh_mlp(10)[0].weight.detach().numpy().ravel()
            cos = np.abs(w).sum() / np.sqrt(w.size) / np.linalg.norm(w)
            assert angle[0] == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-9)
        else:
            np.testing.assert_array_equal(angle, values[0])
            np.testing.assert_array_equal(ratio, values[1])


# ---------------------------------------------------------------------- the true Jacobian
def test_true_jacobian_singular_values_of_a_non_bp_rule_match_plain_autograd(tmp_path) -> None:
    """jacobian_sv_true of an FA net against the Jacobian of an *unconverted* copy (plain
    autograd): it must not be computed from the feedback Jacobian."""
    plain = tanh_mlp(11)
    net = alignment.convert(tanh_mlp(11), "fa")
    ds = record_once(net, tmp_path)
    _, _, xp, _ = data()
    for i, name in enumerate(LAYERS):
        module = plain.get_submodule(name)
        svs = []
        for n in range(xp.shape[0]):

            def logits(eps: torch.Tensor, n: int = n, module: nn.Module = module) -> torch.Tensor:
                handle = module.register_forward_hook(lambda m, a, out: out + eps)
                try:
                    return plain(xp[n : n + 1])[0]
                finally:
                    handle.remove()

            zero = torch.zeros(1, module.out_features, dtype=torch.float64)
            jac = torch.autograd.functional.jacobian(logits, zero).reshape(3, -1)
            svs.append(np.linalg.svd(jac.numpy(), compute_uv=False))
        expected = np.mean(svs, axis=0)
        np.testing.assert_allclose(
            ds["jacobian_sv_true"].values[0, i, : expected.size], expected, rtol=1e-8, atol=1e-12
        )
        fb = ds["jacobian_sv_fb"].values[0, i, : expected.size]
        if name != "4":  # the last layer's Jacobian is I under every rule
            assert not np.allclose(fb, expected, rtol=1e-3)


def test_probe_quantities_follow_the_probe_schedule(tmp_path) -> None:
    """delta_alignment and DFA layers' feedback_alignment (the probe-mean Jacobian) are
    computed at probe-schedule records only; every other layer's alignment at every record."""
    x, y, xp, yp = data()
    net = alignment.convert(tanh_mlp(6), "dfa")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    rec = alignment.Recorder(
        net,
        tmp_path,
        probe=(xp, yp),
        schedule=schedules.always,
        jacobian_schedule=schedules.every(3),
    )
    for _ in range(5):
        rec.step(x, y)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rec.close(final=False)
    ds = alignment.open_run(tmp_path)
    probed = [0, 3]
    for name in ("feedback_alignment", "feedback_norm_ratio"):
        finite = ds[name].notnull()
        assert ds["step"].values[finite.all("layer").values].tolist() == probed
        assert ds["step"].values[finite.any("layer").values].tolist() == probed
    delta = ds["delta_alignment"].notnull().all(["layer", "sample"])
    assert ds["step"].values[delta.values].tolist() == probed
    assert ds["feedback_alignment"].attrs["schedule"] == "main (DFA layers: probe)"
    assert ds["grad_alignment"].notnull().all()
