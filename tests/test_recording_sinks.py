"""Sinks on the Recorder: every record reaches them as it is made, equal to the zarr record; a
sink that raises is reported once and switched off while training and the record go on; a
slow sink does not hold up training; the TensorBoard sink's event files hold the record."""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import alignment
from alignment.cli import main
from alignment.config import load_config
from alignment.recording import schedules, sinks
from alignment.recording.schema import TIMINGS
from alignment.recording.sinks import Record, SinkWarning
from alignment.recording.tensorboard import TensorBoardSink
from alignment.sweeps.expand import identity
from alignment.training.runconfig import differences

STEPS = 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 12, generator=g), torch.randint(0, 3, (8,), generator=g))] * STEPS


def run(run_dir: Path, sinks=(), *, stop: int = STEPS, state=None, resume=False) -> dict:
    """A PFA MLP (12-10-3) trained up to ``stop`` (of ``STEPS``) steps, every step recorded,
    the probe quantities every 3, a test accuracy logged after the last step; from ``state``
    (a resume) if given. Returns the recorder's state before step 4."""
    torch.manual_seed(0)
    model = alignment.convert(nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3)), "pfa")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    batches = data()
    rec = alignment.Recorder(
        model,
        run_dir,
        optimizer=opt,
        probe=batches[0],
        schedule=schedules.every(1),
        jacobian_schedule=schedules.every(3),
        sinks=sinks,
        resume=resume,
    )
    if state is not None:
        rec.load_state_dict(state)
    saved = {}
    for step in range(rec._next_step, stop):
        if step == 4:
            saved = rec.state_dict()
        x, y = batches[step]
        rec.step(x, y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if stop == STEPS:
        rec.log(test_accuracy=0.5, my_metric=2.0)
    rec.close(final=stop == STEPS)
    return saved


def without_timings(ds: xr.Dataset) -> xr.Dataset:
    out = ds.drop_vars(TIMINGS)
    out.attrs = {k: v for k, v in ds.attrs.items() if k not in ("start_time", "git_sha")}
    return out


def test_every_record_reaches_the_sink_as_the_zarr_record_holds_it(tmp_path: Path) -> None:
    got: list[Record] = []
    run(tmp_path, [got.append])
    ds = alignment.open_run(tmp_path)
    assert [r.step for r in got] == list(ds.step.values) == list(range(STEPS + 1))
    for record in got:
        mine = record.dataset()
        stored = ds[list(mine.data_vars)].sel(step=[record.step])
        stored = stored.drop_vars([c for c in stored.coords if c.startswith("layer_")])
        xr.testing.assert_identical(mine, stored.drop_attrs(deep=False))
    last = got[-1].scalars()
    assert last["test_accuracy"] == 0.5 and last["user_my_metric"] == 2.0
    assert last["feedback_alignment/0"] == float(ds.feedback_alignment.isel(step=-1, layer=0))
    # a probe quantity is in the records of the probe schedule only
    assert "delta_alignment/0" in got[3].distributions()
    assert "delta_alignment/0" not in got[4].distributions()
    stored = ds.delta_alignment.sel(step=3, layer="0").values
    np.testing.assert_array_equal(
        got[3].distributions()["delta_alignment/0"], stored[np.isfinite(stored)]
    )


def test_a_sink_that_raises_is_reported_once_and_switched_off(tmp_path: Path) -> None:
    calls: list[int] = []
    good: list[int] = []

    def flaky(record: Record) -> None:
        calls.append(record.step)
        if record.step == 2:
            raise RuntimeError("disk of the dashboard is full")

    run(tmp_path / "plain")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(tmp_path / "sinks", [flaky, lambda r: good.append(r.step)])
    sink_warnings = [w for w in caught if issubclass(w.category, SinkWarning)]
    assert len(sink_warnings) == 1, [str(w.message) for w in caught]
    message = str(sink_warnings[0].message)
    assert "flaky" in message and "RuntimeError: disk of the dashboard is full" in message
    assert "at step 2" in message and "switched off" in message
    assert calls == [0, 1, 2]  # nothing after it raised
    assert good == list(range(STEPS + 1))  # the other sink goes on
    plain = alignment.open_run(tmp_path / "plain")
    with_sinks = alignment.open_run(tmp_path / "sinks")
    xr.testing.assert_identical(without_timings(plain), without_timings(with_sinks))


def test_a_sink_whose_close_raises_is_reported(tmp_path: Path) -> None:
    class Closing:
        def __call__(self, record: Record) -> None:
            pass

        def close(self) -> None:
            raise OSError("gone")

    with pytest.warns(SinkWarning, match=r"sink .*Closing raised OSError: gone \(at close\)"):
        run(tmp_path, [Closing()])
    assert alignment.open_run(tmp_path).sizes["step"] == STEPS + 1


def test_every_sink_is_closed_once_also_without_records(tmp_path: Path) -> None:
    closed: list[str] = []

    class Closing:
        def __call__(self, record: Record) -> None:
            pass

        def close(self) -> None:
            closed.append("closed")

    rec = alignment.Recorder(alignment.convert(nn.Linear(3, 2), "fa"), tmp_path, sinks=[Closing()])
    rec.close()
    rec.close()
    assert closed == ["closed"]


def test_close_waits_for_a_stuck_sink_only_so_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sinks, "CLOSE_TIMEOUT", 0.5)
    release = threading.Event()

    def stuck(record: Record) -> None:
        release.wait(timeout=30)

    with pytest.warns(SinkWarning, match=r"\.stuck\) did not finish within 0\.5 s"):
        run(tmp_path, [stuck])
    release.set()
    assert alignment.open_run(tmp_path).sizes["step"] == STEPS + 1


def test_a_slow_sink_does_not_hold_up_training(tmp_path: Path) -> None:
    release = threading.Event()
    got: list[int] = []

    def slow(record: Record) -> None:  # blocks until the training loop has run every step
        release.wait(timeout=5)
        got.append(record.step)

    torch.manual_seed(0)
    model = alignment.convert(nn.Sequential(nn.Linear(12, 3)), "fa")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = alignment.Recorder(
        model, tmp_path, optimizer=opt, schedule=schedules.every(1), sinks=[slow]
    )
    for x, y in data():
        rec.step(x, y)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    during = list(got)  # every step ran while the sink was blocked on its first record
    release.set()
    rec.close()
    assert during == []
    assert got == list(range(STEPS + 1))


def test_sinks_must_be_callables(tmp_path: Path) -> None:
    model = alignment.convert(nn.Linear(3, 2), "fa")
    with pytest.raises(TypeError, match="list of callables"):
        alignment.Recorder(model, tmp_path / "a", sinks=print)
    with pytest.raises(TypeError, match="must be callable"):
        alignment.Recorder(model, tmp_path / "b", sinks=["tensorboard"])


def events(log_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0}).Reload()


def test_tensorboard_events_hold_the_record(tmp_path: Path) -> None:
    run(tmp_path, [TensorBoardSink(tmp_path / "tensorboard")])
    ds = alignment.open_run(tmp_path)
    ea = events(tmp_path / "tensorboard")
    expected: dict[str, dict[int, float]] = {}
    histograms: dict[str, dict[int, np.ndarray]] = {}
    for name, var in ds.data_vars.items():
        if "step" not in var.dims:
            continue
        for step in ds.step.values:
            at = var.sel(step=step)
            if var.dims == ("step",):
                if np.isfinite(at):
                    expected.setdefault(f"alignment/{name}", {})[int(step)] = float(at)
            for layer in ds.layer.values if "layer" in var.dims else ():
                values = at.sel(layer=layer).values
                if var.dims == ("step", "layer") and np.isfinite(values):
                    expected.setdefault(f"alignment/{name}/{layer}", {})[int(step)] = float(values)
                elif var.ndim == 3 and np.isfinite(values).any():
                    tag = f"alignment/{name}/{layer}"
                    histograms.setdefault(tag, {})[int(step)] = values[np.isfinite(values)]
    network = {
        "alignment/loss",
        "alignment/lr",
        "alignment/weight_decay",
        "alignment/test_accuracy",
    }
    assert network <= set(expected)
    assert "alignment/feedback_alignment/0" in expected and "alignment/record_seconds" in expected
    assert "alignment/user_my_metric" in expected and "alignment/feedback_residual/2" in expected
    assert sorted(ea.Tags()["scalars"]) == sorted(expected)
    for tag, by_step in expected.items():
        got = {e.step: e.value for e in ea.Scalars(tag)}
        assert got == {s: float(np.float32(v)) for s, v in by_step.items()}, tag
    assert {"alignment/delta_alignment/0", "alignment/jacobian_alignment/2"} <= set(histograms)
    assert sorted(ea.Tags()["histograms"]) == sorted(histograms)
    for tag, by_step in histograms.items():
        got = {e.step: e.histogram_value for e in ea.Histograms(tag)}
        assert sorted(got) == sorted(by_step) == [0, 3, 6, 8], tag
        for step, values in by_step.items():
            h = got[step]
            assert h.num == values.size and h.min == values.min() and h.max == values.max()
            assert h.sum == pytest.approx(values.sum(), rel=1e-12, abs=1e-12)


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path: Path) -> None:
    log_dir = tmp_path / "tensorboard"
    state = run(tmp_path, [TensorBoardSink(log_dir)], stop=7)  # interrupted after step 6
    run(tmp_path, [TensorBoardSink(log_dir)], state=state, resume=True)
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    ds = alignment.open_run(tmp_path)
    loss = events(log_dir).Scalars("alignment/loss")
    assert [e.step for e in loss] == list(ds.step.values) == list(range(STEPS + 1))
    assert [e.value for e in loss] == [float(np.float32(v)) for v in ds.loss.values]


TINY_TRAIN = ["epochs=1", "max_steps_per_epoch=3", "data.name=digits", "data.batch_size=16"]


def test_record_tensorboard_writes_events_in_the_run_folder(tmp_path: Path) -> None:
    argv = ["train", "demo/pfa", "--out", str(tmp_path / "out"), "--quiet", "--seeds", "0"]
    for setting in [*TINY_TRAIN, "record.tensorboard=true"]:
        argv += ["--set", setting]
    assert main(argv) == 0
    (run_dir,) = [p.parent for p in (tmp_path / "out").rglob("record.zarr")]
    ds = alignment.open_run(run_dir)
    ea = events(run_dir / "tensorboard")
    for tag, var in [("alignment/test_accuracy", ds.test_accuracy)] + [
        (f"alignment/feedback_alignment/{layer}", ds.feedback_alignment.sel(layer=layer))
        for layer in ds.layer.values
    ]:
        finite = var.dropna("step")
        assert [e.step for e in ea.Scalars(tag)] == list(finite.step.values)
        assert [e.value for e in ea.Scalars(tag)] == list(finite.values.astype(np.float32))
    assert "alignment/jacobian_alignment/fc1" in ea.Tags()["histograms"]


def test_record_tensorboard_without_the_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    argv = ["train", "demo/pfa", "--out", str(tmp_path / "out"), "--quiet", "--seeds", "0"]
    for setting in [*TINY_TRAIN, "record.tensorboard=true"]:
        argv += ["--set", setting]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alignment: error: record.tensorboard: true")
    assert 'pip install "feedback-alignment[tensorboard]"' in err and "set it to false" in err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != ".lock"]


def test_record_tensorboard_is_not_part_of_a_runs_identity() -> None:
    plain = load_config("demo/pfa")
    watched = load_config("demo/pfa", ["record.tensorboard=true"])
    assert watched.record.tensorboard and not plain.record.tensorboard
    assert identity(plain) == identity(watched)  # the same sweep run ID
    old = plain.to_dict()
    del old["record"]["tensorboard"]  # a run folder from before the key existed
    assert differences(old, watched.to_dict()) == []  # resumable with or without it
