"""The Recorder in training loops: it never perturbs training, it is deterministic, it works for
every rule on a conv net with BatchNorm and dropout, and its records follow the schema."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

import alignment
from alignment.recording import combine_runs, schedules, to_netcdf, validate
from alignment.recording.open import netcdf_engine
from alignment.recording.schema import TIMINGS

RULES = list(alignment.RULES)

pytestmark = pytest.mark.filterwarnings("ignore::alignment.recording.FewRecordsWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one intra-op thread avoids OpenMP synchronisation, which costs
    far more than the work itself (100× on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    ).double()


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(5, 2, 6, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (5,), generator=g),
        )
        for _ in range(n)
    ]


def build(rule: str, seed: int = 0) -> nn.Module:
    options = {"k": 2} if rule == "pfa" else {}
    return alignment.convert(conv_net(seed), rule, **options)


def train(
    model: nn.Module, data, recorder: alignment.Recorder | None = None
) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    if recorder is not None:
        recorder.optimizer = opt
    for x, y in data:
        if recorder is not None:
            recorder.step(x, y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def record_everything(model: nn.Module, run_dir, probe, **kwargs) -> alignment.Recorder:
    options = {
        "probe": probe,
        "schedule": schedules.always,
        "jacobian_schedule": schedules.always,
        "raw_schedule": schedules.always,
        "raw_layers": "all",
        "seed": 0,
        "config": {"lr": 0.05, "model": "conv_net"},
        "flush_every": 2,
    }
    return alignment.Recorder(model, run_dir, **(options | kwargs))


@pytest.mark.parametrize("rule", ["fa", "brsf", "dfa", "pfa"])
def test_recording_does_not_perturb_training(tmp_path, rule: str) -> None:
    """Bitwise the same weights, BatchNorm statistics, optimizer state and RNG stream."""
    data = batches(3)
    probe = batches(1, seed=7)[0]
    plain, recorded = build(rule), build(rule)
    torch.manual_seed(123)
    opt_plain = train(plain, data)
    rng_plain = torch.get_rng_state()
    torch.manual_seed(123)
    with record_everything(recorded, tmp_path, probe) as rec:
        opt_recorded = train(recorded, data, rec)
    assert torch.equal(torch.get_rng_state(), rng_plain)
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), recorded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    for a, b in zip(opt_plain.state.values(), opt_recorded.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert all(p.grad is not None for p in recorded.parameters() if p.requires_grad)


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_on_a_conv_net_gives_a_valid_complete_record(tmp_path, rule: str) -> None:
    data = batches(2)
    probe = batches(1, seed=7)[0]
    model = build(rule)
    with record_everything(model, tmp_path, probe) as rec:
        train(model, data, rec)
    ds = alignment.open_run(tmp_path, raw=True)
    assert list(ds["layer"].values) == ["0", "4", "7"]
    assert ds["step"].values.tolist() == [0, 1, 2]  # 2 = the final weights, recorded by close()
    assert ds.sizes["sample"] == 5 and ds.sizes["sv"] == 3
    for name in ("feedback_alignment", "grad_alignment", "delta_alignment", "jacobian_alignment"):
        values = ds[name].values
        assert np.isfinite(values).all(), name
    assert ("feedback_residual" in ds) == (rule in ("pfa", "pfa_o", "kp"))
    assert ("bbt_eigenvalues" in ds) == (rule in ("pfa", "pfa_o"))
    assert ds.attrs["rule"] == rule
    assert json.loads(ds.attrs["rule_options"]) == model[0].rule.options()
    assert json.loads(ds.attrs["config"]) == {"lr": 0.05, "model": "conv_net"}
    assert ds["update__0"].dims == ("raw_step", "0__out", "0__in", "0__kh", "0__kw")
    assert ds["jacobian_fb__4"].dims == (
        "raw_step",
        "sample",
        "logit",
        "4__out",
        "4__height",
        "4__width",
    )
    assert ds["jacobian_true__7"].dims == ("raw_step", "sample", "logit", "7__out")
    assert ds["feedback__0"].dims[1] == ("logit" if rule == "dfa" else "0__out")
    validate(ds)


def test_dfa_conv_feedback_map_is_the_transposed_convolution_of_d(tmp_path) -> None:
    """The DFA feedback_alignment of a conv layer compares conv_transpose(tiled e_out, D)."""
    from alignment.recording.context import StepContext

    model = build("dfa")
    x, y = batches(1)[0]
    rec = alignment.Recorder(model, tmp_path, probe=(x, y), schedule=schedules.never)
    maps = StepContext(rec.net, x, y, F.cross_entropy, rec.probe).dfa_maps
    layer = model[4]  # stride 2, no padding: 6 × 6 → 2 × 2
    eye = torch.eye(3, dtype=torch.float64)[:, :, None, None].expand(3, 3, 2, 2)
    expected = F.conv_transpose2d(eye, layer.D, stride=2, output_padding=1)
    torch.testing.assert_close(maps.fb["4"], expected, rtol=1e-12, atol=1e-12)
    rec.close()


def test_same_seed_gives_a_bitwise_identical_record(tmp_path) -> None:
    runs = []
    for i in range(2):
        torch.manual_seed(5)
        model = build("pfa", seed=3)
        probe = batches(1, seed=7)[0]
        with record_everything(model, tmp_path / str(i), probe) as rec:
            train(model, batches(3), rec)
        runs.append(alignment.open_run(tmp_path / str(i), raw=True).drop_vars(TIMINGS))
    for ds in runs:
        ds.attrs["start_time"] = ""
    xr.testing.assert_identical(runs[0], runs[1])


def test_layers_are_named_in_forward_order(tmp_path) -> None:
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)
            self.middle = nn.Linear(4, 4)
            self.stem = nn.Linear(5, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.middle(torch.relu(self.stem(x)))))

    torch.manual_seed(0)
    model = alignment.convert(Reversed(), "fa")
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    with alignment.Recorder(model, tmp_path) as rec:  # no probe: the first batch is the probe
        rec.step(x, y)
    ds = alignment.open_run(tmp_path)
    assert list(ds["layer"].values) == ["stem", "middle", "head"]
    np.testing.assert_array_equal(ds["probe_input"].values, x.numpy())
    np.testing.assert_array_equal(ds["probe_label"].values, y.numpy())
    assert ds["probe_input"].dims == ("sample", "feature")


def test_default_schedules_and_epochs(tmp_path) -> None:
    model = build("fa")
    data = batches(1)[0]
    rec = alignment.Recorder(model, tmp_path, probe=data, steps_per_epoch=7)
    assert repr(rec.schedule) == "every(200) | epoch_end(7)"
    assert repr(rec.jacobian_schedule) == "epoch_end(7)"
    assert rec.raw_schedule is schedules.never
    recorded = [s for s in range(30) if rec.step(*data)]
    assert recorded == [0, 7, 14, 21, 28]
    rec.close()  # no update after step 29: the final weights are step 29's, recorded at close
    ds = alignment.open_run(tmp_path)
    assert ds["step"].values.tolist() == [0, 7, 14, 21, 28, 29]
    assert list(ds["epoch"].values) == [0, 1, 2, 3, 4, 4]
    assert np.isfinite(ds["jacobian_alignment"].values).all()


def test_explicit_epochs_carry_forward_without_steps_per_epoch(tmp_path) -> None:
    model = build("fa")
    data = batches(1)[0]
    with alignment.Recorder(model, tmp_path, probe=data, schedule=schedules.every(2)) as rec:
        for step in range(6):
            rec.step(*data, epoch=10 + step // 3 if step % 3 == 0 else None)
    ds = alignment.open_run(tmp_path)
    assert list(ds["step"].values) == [0, 2, 4, 5]  # 5: the last step seen, recorded at close
    assert list(ds["epoch"].values) == [10, 10, 11, 11]


def test_misuse_is_reported(tmp_path) -> None:
    model = build("fa")
    data = batches(1)[0]
    rec = alignment.Recorder(model, tmp_path, probe=data, schedule=schedules.always)
    rec.step(*data, step=5)
    with pytest.raises(ValueError, match="not after the last recorded step 5"):
        rec.step(*data, step=5)
    rec.close()
    rec.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        rec.step(*data, step=9)
    with pytest.raises(FileExistsError, match="resume=True"):
        alignment.Recorder(model, tmp_path, probe=data)
    with pytest.raises(ValueError, match="raw_layers"):
        alignment.Recorder(model, tmp_path / "b", probe=data, raw_layers=["nope"])
    with pytest.raises(ValueError, match="flush_every"):
        alignment.Recorder(model, tmp_path / "c", flush_every=0)
    with pytest.raises(ValueError, match="no converted layers"):
        alignment.Recorder(conv_net(), tmp_path / "d", probe=data)


def test_three_line_loop(tmp_path) -> None:
    """The README snippet: a plain loop plus three lines."""
    torch.manual_seed(0)
    model = alignment.convert(
        nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), "pfa"
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    loader = [(torch.randn(16, 2, 4), torch.randint(0, 4, (16,))) for _ in range(12)]
    with alignment.Recorder(model, tmp_path, optimizer=opt, schedule=schedules.every(3)) as rec:
        for x, y in loader:
            rec.step(x, y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    ds = alignment.open_run(tmp_path)
    assert list(ds["step"].values) == [0, 3, 6, 9, 12]  # 12: the final weights, at close()
    assert ds["lr"].values.tolist() == [0.1] * 5
    # weight decay contracts R − BᵀW (alignment.theory, property 1): the residual decreases
    assert np.all(np.diff(ds["feedback_residual"].values, axis=0) < 0)


def test_open_runs_combines_rules_seeds_and_options(tmp_path) -> None:
    specs = [("fa", 0, {}), ("fa", 1, {}), ("pfa", 0, {"k": 2}), ("pfa", 0, {"k": 3})]
    probe = batches(1, seed=7)[0]
    for i, (rule, seed, options) in enumerate(specs):
        model = alignment.convert(conv_net(seed), rule, **options)
        steps = 3 if i != 1 else 2  # runs of different lengths align by outer join
        with alignment.Recorder(
            model,
            tmp_path / f"run{i}",
            probe=probe,
            seed=seed,
            schedule=schedules.always,
            final=False,
        ) as rec:
            train(model, batches(steps), rec)
    stacked = alignment.open_runs(str(tmp_path / "run*"))
    assert list(stacked["run"].values) == ["run0", "run1", "run2", "run3"]
    combined = alignment.recording.grid(stacked)  # rule × seed, and k: PFA has two
    assert json.loads(combined.attrs["run_dims"]) == ["rule", "seed", "k"]
    assert combined["grad_alignment"].dims == ("rule", "seed", "k", "step", "layer")
    assert list(combined["rule"].values) == ["fa", "pfa"]
    one = alignment.open_run(tmp_path / "run3")
    picked = combined["grad_alignment"].sel(rule="pfa", seed=0, k=3.0)
    np.testing.assert_array_equal(picked.values, one["grad_alignment"].values)
    ks = combined["k"].values
    assert ks[:2].tolist() == [2.0, 3.0] and np.isnan(ks[2])  # fa has no k: NaN
    short = combined["loss"].sel(rule="fa", seed=1).isel(k=2).values
    assert np.isfinite(short[:2]).all() and np.isnan(short[2])
    assert np.isnan(combined["loss"].sel(rule="pfa", seed=1).values).all()  # no such run
    assert list(combined["epoch"].dims) == ["step"]
    in_memory = combine_runs([alignment.open_run(tmp_path / f"run{i}") for i in range(4)])
    xr.testing.assert_equal(in_memory, stacked)
    with pytest.raises(ValueError, match="already combines runs"):
        combine_runs([combined])
    with pytest.raises(ValueError, match="given twice"):
        alignment.open_runs([tmp_path / "run0", tmp_path / "run0"])
    with pytest.raises(FileNotFoundError):
        alignment.open_runs(str(tmp_path / "nothing*"))


ENGINES = [
    "scipy",
    pytest.param(
        "h5netcdf",
        marks=pytest.mark.skipif(
            netcdf_engine() != "h5netcdf",
            reason="h5netcdf writes through h5py, which is not installed",
        ),
    ),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_to_netcdf_round_trip(tmp_path, engine: str) -> None:
    model = build("dfa")
    with record_everything(model, tmp_path / "run", batches(1, seed=7)[0]) as rec:
        train(model, batches(2), rec)
    path = to_netcdf(tmp_path / "run", tmp_path / "run.nc", raw=True, engine=engine)
    with xr.open_dataset(path, engine=engine) as nc:
        back = nc.load()
    original = alignment.open_run(tmp_path / "run", raw=True)
    xr.testing.assert_allclose(back.drop_vars("layer"), original.drop_vars("layer"))
    assert [str(v) for v in back["layer"].values] == list(original["layer"].values)
    assert back.attrs["rule"] == "dfa"
    validate(back)


def test_recorder_state_round_trip_is_small(tmp_path) -> None:
    model = build("fa")
    data = batches(1)[0]
    with alignment.Recorder(model, tmp_path, probe=data, schedule=schedules.always) as rec:
        rec.step(*data, epoch=2)
        state = rec.state_dict()
    decay = {"c": 1.0, "buf": None, "started": True, "valid": False}  # FA: no residual
    elapsed = state.pop("elapsed_seconds")  # the run's wall-clock time so far
    assert isinstance(elapsed, float) and 0 < elapsed < 60
    assert state == {"step": 1, "epoch": 2, "last_recorded": 0, "residual_decay": decay}
    copy.deepcopy(state)
