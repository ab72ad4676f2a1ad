"""Storage: the append-only segment log, crash safety (a real SIGKILL), bounded flushing, resume."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

import alignment
from alignment.recording import schedules, validate
from alignment.recording.schema import TIMINGS
from alignment.recording.store import SegmentStore

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::alignment.recording.FewRecordsWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one intra-op thread avoids OpenMP synchronisation, which costs
    far more than the work itself (100× on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def segment(steps: list[int], value: float = 1.0) -> xr.Dataset:
    return xr.Dataset(
        {
            "loss": (
                "step",
                np.full(len(steps), value),
                alignment.recording.schema.VARIABLES["loss"].attrs,
            )
        },
        coords={
            "step": np.array(steps, dtype=np.int64),
            "epoch": ("step", np.zeros(len(steps), np.int64)),
        },
    )


def test_log_replays_records_truncations_and_compaction(tmp_path) -> None:
    store = SegmentStore(tmp_path)
    store.create()
    assert store.read("main") is None
    store.append("main", segment([0, 1]))
    store.append("main", segment([2, 3], 2.0))
    store.append("main", segment([4]))
    store.truncate("main", 3)  # a resume from step 3: drops 3 and 4
    store.append("main", segment([3, 5], 7.0))
    ds = store.read("main")
    assert ds["step"].values.tolist() == [0, 1, 2, 3, 5]
    assert ds["loss"].values.tolist() == [1, 1, 2, 7, 7]
    store.compact("main")
    assert [e.kind for e in store.entries("main")] == ["compact"]
    xr.testing.assert_identical(store.read("main"), ds)
    store.append("main", segment([6]))
    assert store.read("main")["step"].values.tolist() == [0, 1, 2, 3, 5, 6]


def test_leftovers_of_interrupted_writes_are_ignored(tmp_path) -> None:
    store = SegmentStore(tmp_path)
    store.create()
    store.append("main", segment([0, 1]))
    (store.root / "main" / ".tmp-00000001-dead").mkdir()  # a write killed before its rename
    (store.root / "main" / ".tmp-00000001-dead" / "zarr.json").write_text("{trunc")
    store.append("main", segment([2]))
    # a compaction killed after writing its segment but before deleting what it replaces
    ds = store.read("main")
    compacted = store.root / "main" / "00000002.compact"
    from alignment.recording.store import write_zarr

    write_zarr(ds, compacted)
    store.append("main", segment([3]))
    assert store.read("main")["step"].values.tolist() == [0, 1, 2, 3]
    store.clean()
    assert not list((store.root / "main").glob(".tmp-*"))


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return alignment.convert(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), "pfa", k=2)


def stream(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(n)
    ]


PROBE = (
    torch.randn(5, 6, generator=torch.Generator().manual_seed(9)),
    torch.tensor([0, 1, 2, 0, 1]),
)


def recorder(model, run_dir, opt, **kwargs) -> alignment.Recorder:
    return alignment.Recorder(
        model,
        run_dir,
        probe=PROBE,
        optimizer=opt,
        schedule=schedules.always,
        jacobian_schedule=schedules.every(3),
        raw_schedule=schedules.every(4),
        raw_layers=["0"],
        flush_every=2,
        seed=0,
        **kwargs,
    )


def train_steps(model, opt, rec, data, steps) -> None:
    for step in steps:
        x, y = data[step]
        rec.step(x, y, step=step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_flushes_are_bounded_and_what_was_flushed_is_readable(tmp_path) -> None:
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = recorder(model, tmp_path, opt)
    train_steps(model, opt, rec, stream(7), range(7))
    # no close(): steps 0–5 were flushed in pairs, step 6 is still buffered
    assert alignment.open_run(tmp_path)["step"].values.tolist() == [0, 1, 2, 3, 4, 5]
    rec.close()  # flushes step 6 and records the final weights (after step 6's update) as step 7
    assert alignment.open_run(tmp_path)["step"].values.tolist() == list(range(8))


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path) -> None:
    data = stream(12)
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    with recorder(model, tmp_path / "straight", opt) as rec:
        train_steps(model, opt, rec, data, range(12))

    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    rec = recorder(model, tmp_path / "resumed", opt)
    train_steps(model, opt, rec, data, range(6))
    checkpoint = copy.deepcopy(
        {"model": model.state_dict(), "opt": opt.state_dict(), "rec": rec.state_dict()}
    )
    train_steps(model, opt, rec, data, range(6, 11))  # then the process dies: no close()
    del rec

    model = tiny(seed=1)  # other weights: the checkpoint must restore everything
    model.load_state_dict(checkpoint["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt.load_state_dict(checkpoint["opt"])
    rec = recorder(model, tmp_path / "resumed", opt, resume=True)
    rec.load_state_dict(checkpoint["rec"])
    train_steps(model, opt, rec, data, range(6, 12))
    rec.close()

    straight = alignment.open_run(tmp_path / "straight", raw=True)
    resumed = alignment.open_run(tmp_path / "resumed", raw=True)
    straight, resumed = (ds.drop_vars(TIMINGS) for ds in (straight, resumed))
    for ds in (straight, resumed):
        ds.attrs["start_time"] = ""
    xr.testing.assert_identical(straight, resumed)
    assert resumed["raw_step"].values.tolist() == [0, 4, 8]


CHILD = textwrap.dedent(
    """
    import itertools, os, signal, sys
    import torch
    from torch import nn
    import alignment
    from alignment.recording import schedules, store

    run_dir, mode = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = alignment.convert(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), "fa")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    rec = alignment.Recorder(model, run_dir, probe=(x[:4], y[:4]), schedule=schedules.always,
                             jacobian_schedule=schedules.every(3), flush_every=2)
    if mode == "during-write":  # die inside the 4th flush, its segment written but not renamed
        rename, renames = os.rename, []
        def dying_rename(src, dst):
            if os.path.basename(os.path.dirname(dst)) == "main":
                renames.append(dst)
                if len(renames) == 4:
                    os.kill(os.getpid(), signal.SIGKILL)
            return rename(src, dst)
        store.os.rename = dying_rename
    for step in itertools.count():
        rec.step(x, y)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        if not rec._buffer:
            print("flushed", step, flush=True)
    """
)


def child(run_dir: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigkill_during_a_segment_write_keeps_every_earlier_flush(tmp_path) -> None:
    proc = child(tmp_path, "during-write")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert out.split() == ["flushed", "1", "flushed", "3", "flushed", "5"]
    assert list((tmp_path / "record.zarr" / "main").glob(".tmp-*"))  # the interrupted write
    ds = alignment.open_run(tmp_path)
    assert ds["step"].values.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.isfinite(ds["grad_alignment"].values).all()
    assert np.isfinite(ds["jacobian_alignment"].sel(step=[0, 3]).values).all()
    validate(ds)
    rec = alignment.Recorder(tiny(), tmp_path, resume=True)  # resuming cleans the leftovers
    assert rec.state_dict()["step"] == 6
    assert not list((tmp_path / "record.zarr" / "main").glob(".tmp-*"))


def test_sigkill_from_outside_at_any_moment_leaves_a_readable_record(tmp_path) -> None:
    proc = child(tmp_path, "run")
    flushed = []
    try:
        for line in proc.stdout:
            flushed.append(int(line.split()[1]))
            if len(flushed) == 5:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert len(flushed) == 5, proc.stderr
    ds = alignment.open_run(tmp_path)
    steps = ds["step"].values.tolist()
    assert steps == list(range(len(steps))) and steps[-1] >= flushed[-1]
    assert len(steps) % 2 == 0  # whole segments only
    validate(ds)


@pytest.mark.parametrize("raw", [False, True])
def test_open_run_of_a_missing_run_is_a_clear_error(tmp_path, raw: bool) -> None:
    with pytest.raises(FileNotFoundError, match="no recorded run"):
        alignment.open_run(tmp_path / "nope", raw=raw)
