"""The runner: determinism, resume after SIGKILL, divergence, the CLI end to end."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from alignment.cli import main
from alignment.config import config_from_dict
from alignment.recording import open_run, validate
from alignment.recording.schema import TIMINGS
from alignment.training import DivergenceError, resume, train

TINY = {
    "name": "tiny",
    "model": {"name": "mlp"},
    "rule": {"name": "pfa", "k": 2},
    "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 500},
    "optim": {"lr": 0.05, "weight_decay": 0.01},
    "wd_schedule": {"gamma": 0.1, "burst_steps": 5},
    "lr_schedule": {"name": "multistep", "milestones": [2], "gamma": 0.5},
    "epochs": 3,
    "max_steps_per_epoch": 6,
    "record": {"every": 2, "jacobian": "epoch", "probe_size": 4, "flush_every": 2},
    "checkpoint_every": 2,
}


def tiny(**changes: object) -> dict:
    config = yaml.safe_load(yaml.safe_dump(TINY))
    for key, value in changes.items():
        section, _, leaf = key.partition(".")
        if leaf:
            config.setdefault(section, {})[leaf] = value
        else:
            config[key] = value
    return config


def data_of(ds: xr.Dataset) -> xr.Dataset:
    """The Dataset without the attrs that name when and from which commit a run started, and
    without the recorder's wall-clock times."""
    out = ds.drop_vars(TIMINGS, errors="ignore")
    out.attrs = {k: v for k, v in ds.attrs.items() if k not in ("start_time", "git_sha")}
    return out


def test_same_seed_gives_a_bitwise_identical_record(tmp_path: Path) -> None:
    config = config_from_dict(tiny())
    (a,) = train(config, tmp_path / "a", quiet=True)
    (b,) = train(config, tmp_path / "b", quiet=True)
    ds_a, ds_b = open_run(a.run_dir), open_run(b.run_dir)
    validate(ds_a)
    xr.testing.assert_identical(data_of(ds_a), data_of(ds_b))
    assert ds_a.sizes["step"] >= 10 and np.isfinite(ds_a["test_accuracy"]).sum() == 4
    (c,) = train(config, tmp_path / "c", seeds=[1], quiet=True)
    assert not open_run(c.run_dir)["loss"].equals(ds_a["loss"])


def test_the_weight_decay_burst_and_lr_schedule_reach_the_optimizer(tmp_path: Path) -> None:
    (result,) = train(config_from_dict(tiny()), tmp_path, quiet=True)
    ds = open_run(result.run_dir)
    wd = ds["weight_decay"].dropna("step")
    assert np.allclose(wd.sel(step=wd.step < 5), 0.01)
    assert np.allclose(wd.sel(step=wd.step >= 5), 0.001)
    lr = ds["lr"].dropna("step")
    assert np.allclose(lr.sel(step=lr.step < 12), 0.05)
    assert np.allclose(lr.sel(step=lr.step >= 12), 0.025)


def test_finished_runs_are_skipped(tmp_path: Path) -> None:
    config = config_from_dict(tiny())
    (first,) = train(config, tmp_path, quiet=True)
    mtime = (first.run_dir / "record.zarr").stat().st_mtime_ns
    (again,) = train(config, tmp_path, quiet=True)
    assert again == first and (first.run_dir / "record.zarr").stat().st_mtime_ns == mtime


def checkpoint_step(run_dir: Path) -> int:
    try:
        return torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    except Exception:  # not written yet, or being replaced right now
        return -1


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_record(tmp_path: Path) -> None:
    config = tiny(epochs=4)
    (reference,) = train(config_from_dict(config), tmp_path / "reference", quiet=True)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "killed"
    kill_after = random.Random(os.getpid()).randrange(2, 18)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alignment",
            "train",
            str(config_file),
            "--out",
            str(out),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while checkpoint_step(out / "seed0") < kill_after and process.poll() is None:
        assert time.monotonic() < deadline, "the training subprocess made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run_dir = out / "seed0"
    assert not (run_dir / "DONE").exists(), "the run finished before it could be killed"
    validate(open_run(run_dir))  # what was written before the kill is readable
    resume(run_dir, quiet=True)
    xr.testing.assert_identical(data_of(open_run(run_dir)), data_of(open_run(reference.run_dir)))


def test_divergence_stops_with_a_message_naming_step_rule_and_layers(tmp_path: Path) -> None:
    config = config_from_dict(tiny(**{"optim.lr": 1e12, "rule": {"name": "fa"}}))
    with pytest.raises(DivergenceError) as error:
        train(config, tmp_path, quiet=True)
    message = str(error.value)
    assert "diverged at step" in message and "rule 'fa'" in message
    assert "fc1" in message and "Lower the learning rate" in message
    ds = validate(open_run(tmp_path / "seed0"))
    assert ds.sizes["step"] >= 1


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny(epochs=1)))
    out = tmp_path / "runs"
    assert main(["train", str(config_file), "--out", str(out), "--quiet", "--seeds", "0", "1"]) == 0
    assert (out / "seed0" / "DONE").exists() and (out / "seed1" / "DONE").exists()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("test accuracy: final") == 2 and "fc1" in text and "grad_alignment" in text
    assert main(["configs"]) == 0
    assert "demo/pfa" in capsys.readouterr().out
    assert main(["train", str(config_file), "--set", "optim.lrr=1", "--out", str(out)]) == 2
    assert "unknown key optim.'lrr'" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "nowhere")]) == 2


def test_cli_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alignment", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("train", "resume", "info", "configs"):
        assert command in result.stdout
