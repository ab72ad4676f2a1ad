"""feedback_residual_predicted: the recorder's own c_t, tracked at every optimizer step."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignment
from alignment.analyses.decay import predicted_decay
from alignment.config import load_config
from alignment.recording import open_run, schedules
from alignment.theory import decay_factors, decay_step
from alignment.training import train

SGD_SETTINGS = [
    {"momentum": 0.0},
    {"momentum": 0.9},
    {"momentum": 0.5, "dampening": 0.3},
    {"momentum": 0.9, "nesterov": True},
]


@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=str)
def test_decay_step_iterates_to_decay_factors_bitwise(settings: dict) -> None:
    rng = np.random.default_rng(3)
    lr, wd = rng.uniform(0.01, 0.2, 30), rng.uniform(0.0, 0.5, 30)
    c, buf, out = 1.0, None, [1.0]
    for t in range(30):
        c, buf = decay_step(c, buf, float(lr[t]), float(wd[t]), **settings)
        out.append(c)
    assert np.array_equal(np.array(out), decay_factors(lr, wd, **settings))


def test_the_trainer_record_holds_the_config_based_prediction(tmp_path: Path) -> None:
    """demo/pfa with its weight-decay burst (shortened) and an lr step: the recorded c_t equals
    alignment.analyses.decay's, recomputed from the config, at every recorded step."""
    overrides = [
        "epochs=2",
        "max_steps_per_epoch=4",
        "wd_schedule.burst_steps=5",
        "lr_schedule.milestones=[1]",
        "record.every=1",
        "record.probe_size=4",
        "rule.k=2",
    ]
    config = load_config("demo/pfa", overrides)
    (result,) = train(config, tmp_path, seeds=[0], quiet=True)
    ds = open_run(result.run_dir)
    recorded = ds["feedback_residual_predicted"]
    assert recorded.attrs["units"] == "1" and recorded.dims == ("step",)
    expected = predicted_decay(ds)
    assert ds.sizes["step"] == 9 and np.isfinite(recorded.values).all()
    assert len(np.unique(ds["lr"])) == 2 and len(np.unique(ds["weight_decay"])) == 2
    np.testing.assert_allclose(recorded.values, expected.values, rtol=0, atol=1e-12)
    assert recorded.values[0] == 1.0 and recorded.values[-1] < 0.99  # the burst shrank D
    # and it is what the residual did (momentum 0.9, lr and decay changing, float32 weights)
    residual = ds["feedback_residual"]
    np.testing.assert_allclose(residual / residual[0], recorded.broadcast_like(residual), rtol=1e-4)


def _pfa_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 4))
    return alignment.convert(net.double(), "pfa", k=3)


def _residuals(model: nn.Module) -> list[torch.Tensor]:
    out = []
    for layer in model.modules():
        if isinstance(layer, alignment.FeedbackLayer):
            out.append((layer.R - layer.B.T @ layer.weight).detach().clone())
    return out


def _own_loop(
    run_dir: Path, opt_kwargs: dict, steps: int = 14, *, scheduler: bool = True, **rec_kwargs
) -> tuple:
    """A plain loop with a torch LR scheduler and a weight-decay change mid-run (float64)."""
    model = _pfa_model()
    opt = torch.optim.SGD(model.parameters(), **opt_kwargs)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5) if scheduler else None
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 12, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,)))]
    rec = alignment.Recorder(model, run_dir, optimizer=opt, schedule=schedules.always, **rec_kwargs)
    lrs, wds, residuals = [], [], []
    for step in range(steps):
        x, y = data[0]
        if step == 6:
            for group in opt.param_groups:
                group["weight_decay"] = 0.01
        rec.step(x, y)
        residuals.append(_residuals(model))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        lrs.append(opt.param_groups[0]["lr"])
        wds.append(opt.param_groups[0]["weight_decay"])
        opt.step()
        if sched is not None:
            sched.step()
    residuals.append(_residuals(model))
    rec.close()
    return open_run(run_dir), np.array(lrs), np.array(wds), residuals


@pytest.mark.parametrize("settings", SGD_SETTINGS[2:], ids=str)
def test_an_own_loop_with_a_torch_scheduler_records_the_exact_factor(
    tmp_path: Path, settings: dict
) -> None:
    ds, lrs, wds, residuals = _own_loop(tmp_path, {"lr": 0.2, "weight_decay": 0.3, **settings})
    recorded = ds["feedback_residual_predicted"].values
    assert ds["step"].values.tolist() == list(range(15))  # 14 steps and the final weights
    assert len(set(lrs)) == 4 and len(set(wds)) == 2  # the schedules really changed both
    expected = decay_factors(lrs, wds, **settings)
    np.testing.assert_allclose(recorded, expected, rtol=0, atol=1e-10)
    assert recorded[-1] < 0.8
    for t, per_layer in enumerate(residuals):  # R − BᵀW = c_t (R_0 − BᵀW_0), measured
        for d_t, d_0 in zip(per_layer, residuals[0], strict=True):
            assert float((d_t - recorded[t] * d_0).norm()) < 1e-10 * float(d_0.norm()), t
    measured = ds["feedback_residual"] / ds["feedback_residual"].isel(step=0)
    np.testing.assert_allclose(
        measured.values, np.abs(recorded)[:, None] * np.ones((1, 2)), atol=1e-10
    )


def test_a_resumed_record_continues_the_factor(tmp_path: Path) -> None:
    """state_dict / load_state_dict carry the recursion: a resumed loop records the same bits."""
    opt_kwargs = {"lr": 0.2, "weight_decay": 0.3, "momentum": 0.9}
    reference, *_ = _own_loop(tmp_path / "reference", opt_kwargs, scheduler=False)

    def run(steps: range, model, opt, rec) -> None:
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 12, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,))
        for step in steps:
            if step == 6:
                for group in opt.param_groups:
                    group["weight_decay"] = 0.01
            rec.step(x, y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    model = _pfa_model()
    opt = torch.optim.SGD(model.parameters(), **opt_kwargs)
    rec = alignment.Recorder(model, tmp_path / "resumed", optimizer=opt, schedule=schedules.always)
    run(range(9), model, opt, rec)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state, rec_state = opt.state_dict(), rec.state_dict()
    rec.close(final=False)
    model = _pfa_model(seed=5)
    model.load_state_dict(saved)
    opt = torch.optim.SGD(model.parameters(), **opt_kwargs)
    opt.load_state_dict(opt_state)
    rec = alignment.Recorder(
        model, tmp_path / "resumed", optimizer=opt, schedule=schedules.always, resume=True
    )
    rec.load_state_dict(rec_state)
    run(range(9, 14), model, opt, rec)
    rec.close()
    resumed = open_run(tmp_path / "resumed")
    assert np.array_equal(
        resumed["feedback_residual_predicted"].values,
        reference["feedback_residual_predicted"].values,
    )
    # without the checkpoint's recorder state the factor is unknown, not wrong
    rec = alignment.Recorder(
        model, tmp_path / "resumed", optimizer=opt, schedule=schedules.always, resume=True
    )
    rec.load_state_dict({k: v for k, v in rec_state.items() if k != "residual_decay"})
    run(range(9, 11), model, opt, rec)
    rec.close(final=False)
    values = open_run(tmp_path / "resumed")["feedback_residual_predicted"]
    assert np.isnan(values.sel(step=[9, 10])).all() and np.isfinite(values.sel(step=8))
    # nor when the loop does not call load_state_dict at all
    rec = alignment.Recorder(
        model, tmp_path / "resumed", optimizer=opt, schedule=schedules.always, resume=True
    )
    run(range(11, 12), model, opt, rec)
    rec.close(final=False)
    values = open_run(tmp_path / "resumed")["feedback_residual_predicted"]
    assert values.step.values[-1] == 11 and np.isnan(values.sel(step=11))


def _first_values(tmp_path: Path, name: str, model: nn.Module, opt, steps: int = 3, **kw):
    x, y = torch.randn(8, 12, dtype=torch.float64), torch.randint(0, 4, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", alignment.recording.FewRecordsWarning)
        rec = alignment.Recorder(
            model, tmp_path / name, optimizer=opt, schedule=schedules.always, **kw
        )
        for _ in range(steps):
            rec.step(x, y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.close(final=False)
    return open_run(tmp_path / name)["feedback_residual_predicted"].values


def test_the_factor_is_nan_where_the_identity_does_not_hold(tmp_path: Path) -> None:
    model = _pfa_model()
    adam = _first_values(tmp_path, "adam", model, torch.optim.Adam(model.parameters()))
    assert np.isnan(adam).all()
    model = _pfa_model()
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    others = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    split = torch.optim.SGD(
        [{"params": weights, "weight_decay": 0.1}, {"params": others}], lr=0.1, weight_decay=0.2
    )
    values = _first_values(tmp_path, "split", model, split)
    assert values[0] == 1.0 and np.isnan(values[1:]).all()  # unknown from the first update on
    # groups of other tensors may differ: biases without decay keep the identity
    model = _pfa_model()
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    grouped = torch.optim.SGD(
        [{"params": biases, "weight_decay": 0.0}, {"params": rest}], lr=0.1, weight_decay=0.2
    )
    np.testing.assert_allclose(
        _first_values(tmp_path, "bias", model, grouped), [1.0, 0.98, 0.98**2], rtol=1e-15
    )
    # a recorder attached to a momentum optimizer mid-training cannot know the buffers
    model = _pfa_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.2)
    _first_values(tmp_path, "before", model, opt, steps=2)  # another recorder, its own record
    assert np.isnan(_first_values(tmp_path, "attached", model, opt)).all()
    # … while without momentum it counts from its first step
    model = _pfa_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.2)
    _first_values(tmp_path, "before0", model, opt, steps=2)
    np.testing.assert_allclose(
        _first_values(tmp_path, "attached0", model, opt), [1.0, 0.98, 0.98**2], rtol=1e-15
    )
    # sparse learned feedback: R's masked entries stay 0 while BᵀW moves
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 4)).double()
    sparse = alignment.convert(net, "pfa", k=3, density=0.5)
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1, weight_decay=0.2)
    assert np.isnan(_first_values(tmp_path, "sparse", sparse, opt)).all()


def test_only_runs_with_a_residual_record_the_factor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = alignment.convert(nn.Sequential(nn.Linear(12, 4)).double(), "fa")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = alignment.Recorder(model, tmp_path / "fa", optimizer=opt, min_records=0)
    rec.step(torch.randn(8, 12, dtype=torch.float64), torch.randint(0, 4, (8,)))
    rec.close(final=False)
    assert "feedback_residual_predicted" not in open_run(tmp_path / "fa")
    assert not opt._optimizer_step_post_hooks  # nothing to follow: no hook
    model = _pfa_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _first_values(tmp_path, "kp-hook", model, opt)
    assert not opt._optimizer_step_post_hooks  # close() removed the recorder's hook


def test_kolen_pollack_records_the_factor_of_b_minus_w(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 4)).double()
    model = alignment.convert(net, "kp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.2)
    values = _first_values(tmp_path, "kp", model, opt, steps=4)
    ds = open_run(tmp_path / "kp")
    expected = decay_factors(0.1, 0.2, momentum=0.9, n_steps=3)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-14)
    measured = ds["feedback_residual"] / ds["feedback_residual"].isel(step=0)
    np.testing.assert_allclose(measured.values, np.abs(values)[:, None] * [1, 1], atol=1e-10)
