"""Own-loop runs with the tooling: runs stack along ``run`` (no empty grid), regroup into a dense
grid over named factors, tabulate as a long table; ``info`` tells running, interrupted and
finished apart for records of a user's own loop; accuracy in one unit."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array
import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from torch import nn

import alignment
from alignment import analyses as an
from alignment.cli import main
from alignment.recording import grid, open_runs, schedules, tidy
from alignment.summary import State, run_state
from tests.synthetic import RULE_OPTIONS, synthetic_run, write_run

ROOT = Path(__file__).resolve().parents[1]
TINY = {"epochs": 1, "steps_per_epoch": 3, "layers": ("fc1", "fc2"), "samples": 2, "sv": 2}
# the 10 runs: fa, usf, pfa k=4, pfa k=10, pfa_o × 2 seeds
TEN = [
    (rule, k, seed)
    for rule, k in (("fa", None), ("usf", None), ("pfa", 4), ("pfa", 10), ("pfa_o", None))
    for seed in (0, 1)
]


def _options(rule: str, k: int | None) -> dict:
    return {**RULE_OPTIONS[rule], **({"k": k} if k else {})}


@pytest.fixture(scope="module")
def ten(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("ten")
    return [
        write_run(
            synthetic_run(rule, seed, options=_options(rule, k), **TINY),  # type: ignore[arg-type]
            root / f"{rule}{k or ''}" / f"seed{seed}",
        )
        for rule, k, seed in TEN
    ]


# ------------------------------------------------------------------------------ combining
def test_ten_runs_stack_into_ten_cells_not_96(ten: list[Path]) -> None:
    ds = open_runs(ten)
    # before: the grid rule × seed × every option that differs (b_init: '', random, orthogonal;
    # k: 1, 4, 10, NaN) had 4 × 2 × 3 × 4 = 96 cells for 10 runs
    axes = ("rule", "seed", "b_init", "k")
    assert math.prod(len({str(v) for v in ds[f].values}) for f in axes) == 96
    assert dict(ds.sizes)["run"] == 10 and ds["loss"].dims == ("run", "step")  # after: 10
    assert list(ds["run"].values[:3]) == ["fa/seed0", "fa/seed1", "usf/seed0"]
    assert json.loads(ds.attrs["run_factors"]) == ["rule", "seed", "b_init", "density", "k"]
    assert bool(ds["loss"].notnull().any("step").all())  # no empty cell
    assert ds["k"].sel(run="pfa4/seed1") == 4 and np.isnan(ds["k"].sel(run="fa/seed0"))
    assert all(set(v.chunks[0]) == {1} for v in ds.data_vars.values())  # one chunk per run

    dense = grid(ds)  # what the analyses use: rule × seed and k, which tells PFA's runs apart
    assert json.loads(dense.attrs["run_dims"]) == ["rule", "seed", "k"]
    assert math.prod(dense.sizes[d] for d in ("rule", "seed", "k")) == 32
    assert dense["b_init"].dims == ("rule",) and dense["density"].dims == ()
    assert dense["run"].sel(rule="pfa", seed=1, k=4.0) == "pfa4/seed1"
    assert isinstance(dense["loss"].data, dask.array.Array)
    xr.testing.assert_identical(dense.compute(), grid(open_runs(ten, lazy=False)))
    np.testing.assert_array_equal(
        dense["loss"].sel(rule="pfa", seed=1, k=4.0), ds["loss"].sel(run="pfa4/seed1")
    )
    with pytest.raises(ValueError, match=r"pfa4/seed0 and pfa10/seed0 share .*apart \(k\)"):
        grid(ds, ["rule", "seed"])
    by_k = grid(ds.where(ds["rule"] == "pfa", drop=True), ["k", "seed"])
    assert dict(by_k["loss"].sizes) == {"k": 2, "seed": 2, "step": 4}
    assert not bool(by_k["loss"].isnull().any())  # dense: every cell a run


def test_tidy_gives_one_row_per_run_step_and_layer(ten: list[Path]) -> None:
    ds = open_runs(ten)
    frame = tidy(ds, ["feedback_alignment", "loss"])
    assert list(frame.columns) == [
        *["run", "rule", "seed", "b_init", "density", "k", "step", "layer", "epoch"],
        *["feedback_alignment", "loss"],
    ]
    assert len(frame) == 10 * 4 * 2  # runs × steps × layers
    row = frame[(frame["run"] == "pfa10/seed1") & (frame["step"] == 2) & (frame["layer"] == "fc2")]
    expected = ds["feedback_alignment"].sel(run="pfa10/seed1", step=2, layer="fc2").values
    assert float(row["feedback_alignment"].iloc[0]) == pytest.approx(float(expected))
    assert int(row["seed"].iloc[0]) == 1 and float(row["k"].iloc[0]) == 10.0
    accuracy = tidy(ds, "test_accuracy")  # recorded at epoch starts only: the rest dropped
    assert len(accuracy) == 10 * 2 and accuracy["test_accuracy"].notnull().all()
    from_grid = tidy(grid(ds), "test_accuracy")  # a grid: points without a run are left out
    assert len(from_grid) == 20 and set(from_grid["run"]) == set(ds["run"].values)
    single = tidy(synthetic_run("fa", 3, **TINY), "loss")  # type: ignore[arg-type]
    assert set(single["seed"]) == {3} and set(single["rule"]) == {"fa"}
    with pytest.raises(ValueError, match="no variable nope"):
        tidy(ds, ["nope"])


def test_tags_and_config_fields_are_factors() -> None:
    runs = []
    for wd in ("burst", "none"):
        run = synthetic_run("pfa", 0, **TINY)  # type: ignore[arg-type]
        run.attrs["tags"] = json.dumps({"wd": wd, "trial": 7})
        config = json.loads(run.attrs["config"])
        config["optim"]["lr"] = 0.1 if wd == "burst" else 0.2
        run.attrs["config"] = json.dumps(config)
        runs.append(run)
    ds = an.combine(runs, names=["runs/burst", "runs/none"], factors=["optim.lr"])
    assert list(ds["run"].values) == ["burst", "none"]
    assert list(ds["wd"].values) == ["burst", "none"] and ds["trial"].dtype.kind == "i"
    assert list(ds["optim.lr"].values) == [0.1, 0.2]
    dense = an.as_combined(ds)  # the same rule and seed: the tag tells them apart
    assert json.loads(dense.attrs["run_dims"]) == ["rule", "seed", "wd"]
    assert dense["optim.lr"].dims == ("wd",) and dense["trial"].dims == ()
    assert set(tidy(ds, "loss")["wd"]) == {"burst", "none"}
    assert [r.attrs["tags"] for _, r in an.split_runs(dense)] == [
        json.dumps({"trial": 7, "wd": w}) for w in ("burst", "none")
    ]
    with pytest.raises(ValueError, match=r"no run has the config field 'optim\.nope'"):
        an.combine(runs, factors=["optim.nope"])
    runs[0].attrs["tags"] = json.dumps({"k": 3})
    with pytest.raises(ValueError, match="tag named 'k'"):
        an.combine(runs)


def test_analyses_take_a_stack_or_its_grid(ten: list[Path]) -> None:
    ds = open_runs(ten)
    table = an.accuracy_table(ds, keep=("k",)).compute()
    xr.testing.assert_identical(table, an.accuracy_table(grid(ds), keep=("k",)).compute())
    assert int(table["seeds"].sel(rule="pfa", k=4.0)) == 2
    stats = an.seed_statistics(ds["loss"]).compute()  # a DataArray of a stack
    assert stats.dims == ("stat", "rule", "k", "step")
    traj = an.alignment_trajectories(ds)  # along step: keeps the run dim
    assert traj["feedback_alignment"].dims == ("run", "epoch", "layer")


# ------------------------------------------------------------------------------ info
OWN_LOOP = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    import torch.nn.functional as F
    import alignment
    from alignment.recording import schedules

    torch.manual_seed(0)
    model = alignment.convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), "fa")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = alignment.Recorder(model, sys.argv[1], optimizer=opt, schedule=schedules.every(1),
                             flush_every=1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for step in range(4):
        rec.step(x, y, **({"test_accuracy": 0.25} if step == 0 else {}))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    print("recording", flush=True)
    time.sleep(60)
    """
)


def _info(run: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["info", str(run)]) == 0
    return capsys.readouterr().out


def test_info_on_a_running_then_killed_own_loop_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "runs" / "fa"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", OWN_LOOP, str(run)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "recording"
            assert run_state(run) == State.RUNNING
            assert "running, last recorded step 3" in _info(tmp_path / "runs", capsys)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    text = _info(run, capsys)
    assert "rule fa  seed -1  interrupted, last recorded step 3" in text
    assert "last recorded 25.00 % (step 0)" in text and "final" not in text


def _own_loop(run: Path, *, fail: bool = False) -> None:
    torch.manual_seed(0)
    model = alignment.convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), "fa")
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with alignment.Recorder(model, run, schedule=schedules.every(1), min_records=0) as rec:
        for step in range(3):
            rec.step(x, y, test_accuracy=0.5)
            if fail and step == 1:
                raise KeyboardInterrupt


def test_info_on_finished_and_failed_own_loop_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _own_loop(tmp_path / "done")
    with pytest.raises(KeyboardInterrupt):
        _own_loop(tmp_path / "stopped", fail=True)
    assert run_state(tmp_path / "done") == State.FINISHED
    assert run_state(tmp_path / "stopped") == State.INTERRUPTED  # the with-block saw the error
    text = _info(tmp_path, capsys)  # a folder of own-loop runs: no config.yaml anywhere
    assert text.index(f"== {tmp_path / 'done'}") < text.index(f"== {tmp_path / 'stopped'}")
    assert "finished, last recorded step 2" in text and "final 50.00 %  best 50.00 %" in text
    assert "interrupted, last recorded step 1" in text
    rec = alignment.Recorder(
        alignment.convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), "fa"),
        tmp_path / "done",
        resume=True,
        min_records=0,
    )
    assert run_state(tmp_path / "done") == State.RUNNING  # continued: not finished any more
    rec.close()
    assert run_state(tmp_path / "done") == State.FINISHED
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_resume_of_a_finished_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(synthetic_run("fa", 0, **TINY), tmp_path / "fa" / "seed0")  # type: ignore[arg-type]
    (run / "DONE").write_text(json.dumps({"final_accuracy": 0.9, "best_accuracy": 0.9, "steps": 3}))
    assert yaml.safe_load((run / "config.yaml").read_text())["rule"]["name"] == "fa"
    assert main(["resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "finished, last recorded step 3" in out


def test_a_second_recorder_on_a_run_being_recorded_is_refused(tmp_path: Path) -> None:
    """One writer per run folder for own loops too: the recorder holds the run lock."""
    import threading

    from alignment.runlock import RunLockedError

    def model() -> nn.Module:
        return alignment.convert(nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), "fa")

    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    recording, release, errors = threading.Event(), threading.Event(), []

    def first() -> None:
        rec = alignment.Recorder(
            model(), tmp_path / "run", schedule=schedules.every(1), min_records=0
        )
        rec.step(x, y)
        recording.set()
        release.wait(30)
        rec.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert recording.wait(30)
        with pytest.raises(RunLockedError, match="is in use by another process"):
            alignment.Recorder(model(), tmp_path / "run", resume=True)
    except BaseException as error:
        errors.append(error)
    finally:
        release.set()
        thread.join()
    assert not errors, errors
    assert run_state(tmp_path / "run") == State.FINISHED


def test_info_into_a_closed_pipe_stops_quietly(ten: list[Path]) -> None:
    """`alignment info RUNS | head -1`: the reader goes away; no error line, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "alignment", "info", str(ten[0].parents[1])]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # before anything is written
        err = process.stderr.read()
        process.wait(timeout=120)
    assert process.returncode == 141 and err == ""
