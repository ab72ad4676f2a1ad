"""Progress output fit for logs: plain lines (step, loss, accuracy, steps/s, ETA) and never a
carriage return when the output is not a terminal; a sweep's Slurm log gets them too."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from alignment import demo
from alignment.cli import main
from alignment.sweeps import expand, load_spec
from alignment.training.progress import LineProgress, ProgressOptions
from tests.test_demo import TINY as DEMO_TINY
from tests.test_sweep_executors import tiny_spec
from tests.test_training import tiny

LINE = re.compile(
    r"^(?P<label>.+): (?:step (?P<step>\d+)/(?P<total>\d+) \(epoch \d+/\d+\)|"
    r"epoch (?P<done>\d+)/\d+ done: step \d+/\d+) loss \d+\.\d{4} acc \d\.\d{4} "
    r"\S+ steps/s ETA (?:\d+:\d\d:\d\d|\?)$"
)


CHEAP = {
    "epochs": 2,
    "max_steps_per_epoch": 4,
    "progress_every": 0,
    "rule": {"name": "fa"},
    "record": {"every": 4, "jacobian": "never", "probe_size": 4, "flush_every": 4},
}


class Clock:
    """A clock that advances one second each time it is read."""

    def __init__(self) -> None:
        self.now = -1.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_lines_every_interval_and_at_epoch_ends_with_rate_and_eta() -> None:
    out = io.StringIO()
    progress = LineProgress(20, 4, 5, "bp seed 0", every=3.5, stream=out, clock=Clock())
    for step in range(6):
        progress.update(loss=1.0 / (step + 1), accuracy=0.5)
    progress.epoch_end(1, accuracy=0.75)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and all(LINE.match(line) for line in lines)
    # clock: 0 at the start; updates at 1, 2, 3, 4; the line reads 5 and is written at 6 (4
    # steps in 5 s, 12 left); updates at 7, 8; the epoch-end line reads 9 (6 steps in 9 s)
    assert lines == [
        "bp seed 0: step 8/20 (epoch 2/4) loss 0.2500 acc 0.5000 0.8 steps/s ETA 0:00:15",
        "bp seed 0: epoch 2/4 done: step 10/20 loss 0.1667 acc 0.7500 0.667 steps/s ETA 0:00:15",
    ]


def test_no_epoch_lines_when_asked() -> None:
    out = io.StringIO()
    progress = LineProgress(10, 0, 5, "x", every=1e9, epoch_lines=False, stream=out)
    progress.update(loss=1.0, accuracy=0.1)
    progress.epoch_end(0, accuracy=0.2)
    assert out.getvalue() == ""


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="choose from auto, bar, lines, off"):
        ProgressOptions("verbose")


def test_a_run_writing_to_a_file_prints_lines_and_no_carriage_returns(tmp_path: Path) -> None:
    """``alignment train`` with stdout and stderr redirected (as under Slurm or CI)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny(**CHEAP)))
    with open(tmp_path / "out.log", "wb") as out, open(tmp_path / "err.log", "wb") as err:
        subprocess.run(
            [sys.executable, "-m", "alignment", "train", str(config), "--out", str(tmp_path)],
            stdout=out,
            stderr=err,
            check=True,
        )
    logged = (tmp_path / "out.log").read_bytes() + (tmp_path / "err.log").read_bytes()
    assert b"\r" not in logged
    lines = [m for m in map(LINE.match, logged.decode().splitlines()) if m]
    assert [int(m["step"]) for m in lines if m["step"]] == list(range(1, 9))
    assert [int(m["done"]) for m in lines if m["done"]] == [1, 2]
    assert {m["label"] for m in lines} == {"fa seed 0"}


def _sweep(tmp_path: Path, cluster: str) -> tuple[Path, Any]:
    """A one-run sweep through submitit's ``cluster`` executor on the Slurm code path, lines
    every step; the output folder and the run."""
    spec = tiny_spec(tmp_path, axes={"config": ["demo/bp"], "seed": [0]})
    changed = yaml.safe_load(spec.read_text())
    changed["set"]["progress_every"] = 0
    spec.write_text(yaml.safe_dump(changed))
    out = tmp_path / "out"
    args = ["sweep", str(spec), "--out", str(out), "--executor", "slurm"]
    assert main([*args, "--submitit-cluster", cluster]) == 0
    (run,) = expand(load_spec(spec), out)
    return out, run


def _assert_progress_lines(text: str, label: str) -> None:
    lines = [m for m in map(LINE.match, text.splitlines()) if m]
    assert [int(m["step"]) for m in lines if m["step"]] == [1, 2]
    assert [int(m["done"]) for m in lines if m["done"]] == [1]
    assert {m["label"] for m in lines} == {label} and "\r" not in text


def test_a_sweep_worker_prints_progress_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a Slurm task prints goes to its log; submitit's debug executor runs the task in this
    process, so here it is on stdout. Each line names the run."""
    _, run = _sweep(tmp_path, "debug")
    _assert_progress_lines(capsys.readouterr().out, run.run_id)


@pytest.mark.slow
def test_a_sweep_workers_slurm_log_has_progress_lines(tmp_path: Path) -> None:
    """submitit's local executor: the task in a subprocess writing to its log file."""
    out, run = _sweep(tmp_path, "local")
    (job,) = [
        json.loads(line) for line in (out / ".submitit" / "jobs.jsonl").read_text().splitlines()
    ]
    _assert_progress_lines(
        (run.run_dir / "slurm" / f"{job['job_id']}_log.out").read_text(), run.run_id
    )


def test_the_demos_runs_print_timed_lines_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo``'s runs: lines every ``progress_every`` seconds, none per epoch (the demo
    prints its own line as each run ends)."""
    sets = [*DEMO_TINY, "progress_every=0"]
    demo.train_one("bp", 0, str(tmp_path), sets)
    captured = capsys.readouterr()
    lines = [m for m in map(LINE.match, captured.out.splitlines()) if m]
    assert [int(m["step"]) for m in lines] == [1, 2, 3]
    assert {m["label"] for m in lines} == {"  bp seed 0"}
    assert "\r" not in captured.out + captured.err
