"""One writer per run folder, no resume that mixes two experiments, one-line errors for damaged
checkpoints, full disks and missing GPUs, and sweep workers that die with their sweep.

Process faults use real subprocesses: two ``alignment train`` (or ``resume``) on one folder, a
lock holder killed with SIGKILL, a sweep killed with SIGKILL."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from alignment.cli import main
from alignment.config import ConfigError, config_from_dict
from alignment.recording import open_run, validate
from alignment.runlock import LOCK, RunLockedError, hold_run, is_locked, run_lock
from alignment.training import checkpoint as checkpoint_module
from alignment.training import resume, train, trainer
from alignment.training.checkpoint import save_checkpoint
from tests.test_training import data_of, tiny

CONFIG = tiny(epochs=2, max_steps_per_epoch=4, rule={"name": "fa"})  # 8 steps, a checkpoint every 2
STOP = 4  # the interrupted run's checkpoint: epoch 1 begins


class KilledError(Exception):
    """Stands for a kill right after a checkpoint."""


def stop_after(step: int) -> Callable[..., None]:
    """A save_checkpoint that raises :class:`KilledError` once it saved step ``step``."""
    real = trainer.save_checkpoint

    def save(run_dir: Path, state: dict) -> None:
        real(run_dir, state)
        if state["step"] >= step:
            raise KilledError

    return save


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The config file, a finished run and a run interrupted at step :data:`STOP`."""
    folder = tmp_path_factory.mktemp("runs")
    config_file = folder / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    train(config_from_dict(CONFIG), folder / "reference", quiet=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", stop_after(STOP))
        with pytest.raises(KilledError):
            train(config_from_dict(CONFIG), folder / "interrupted", quiet=True)
    return {
        "config": config_file,
        "reference": folder / "reference" / "seed0",
        "interrupted": folder / "interrupted",
    }


@pytest.fixture
def interrupted(runs: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the interrupted run's output folder (its run is ``<copy>/seed0``)."""
    out = tmp_path / "out"
    shutil.copytree(runs["interrupted"], out)
    return out


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "alignment", *map(str, args), "--quiet"]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


def assert_same_record(run_dir: Path, reference: Path) -> None:
    ds = validate(open_run(run_dir))
    assert np.unique(ds["step"].values).size == ds.sizes["step"]
    xr.testing.assert_identical(data_of(ds), data_of(open_run(reference)))


# ------------------------------------------------------------------------------ the lock
def wait_for_holder(
    run_dir: Path, pid: int, process: subprocess.Popen, timeout: float = 120
) -> None:
    """Wait until process ``pid`` wrote itself into ``run_dir``'s lock file."""
    deadline = time.monotonic() + timeout
    while f'"pid": {pid},' not in _read(run_dir / LOCK):
        assert process.poll() is None, "the first writer stopped before it took the lock"
        assert time.monotonic() < deadline, "the first writer never took the lock"
        time.sleep(0.02)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def refused_at_once(args: list[str], run_dir: Path, holder: int) -> None:
    """A second writer exits non-zero, with one line naming the folder and the holder's pid,
    without writing into the folder."""
    before = snapshot(run_dir)
    started = time.monotonic()
    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 4, second.stderr
    assert len(lines) == 1 and lines[0].startswith("alignment: error:"), second.stderr
    assert str(run_dir) in lines[0] and f"pid {holder} " in lines[0]
    assert snapshot(run_dir) == before
    assert time.monotonic() - started < 60  # at once: the start of python and torch, no wait


def test_a_second_train_on_one_folder_exits_at_once_and_the_first_finishes(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = cli("train", runs["config"], "--out", out)
    log = tmp_path / "first.log"
    with log.open("w") as stderr:
        first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for_holder(out / "seed0", first.pid, first)
        first.send_signal(signal.SIGSTOP)  # keep it holding the lock while the second starts
        refused_at_once(args, out / "seed0", first.pid)
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, log.read_text()
    finally:
        first.kill()
        first.wait()
    assert (out / "seed0" / "DONE").exists()
    assert_same_record(out / "seed0", runs["reference"])
    assert not is_locked(out / "seed0")


def test_a_second_resume_exits_at_once_and_a_killed_holder_never_blocks(
    runs: dict[str, Path], interrupted: Path
) -> None:
    run_dir = interrupted / "seed0"
    args = cli("resume", run_dir)
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_holder(run_dir, first.pid, first)
        first.send_signal(signal.SIGSTOP)
        refused_at_once(args, run_dir, first.pid)
    finally:
        first.kill()  # SIGKILL while it holds the lock: the kernel releases it
        first.wait()
    assert not (run_dir / "DONE").exists()
    resume(run_dir, quiet=True)
    assert_same_record(run_dir, runs["reference"])


def test_the_lock_is_reentrant_in_its_thread_only(tmp_path: Path) -> None:
    with run_lock(tmp_path) as held:
        assert held and is_locked(tmp_path)
        assert str(os.getpid()) in (tmp_path / LOCK).read_text()
        with hold_run(tmp_path):  # the holder itself (a sweep worker calling train_run)
            pass
        assert is_locked(tmp_path)  # the inner exit does not release it
        other: list[bool] = []
        thread = threading.Thread(target=lambda: other.append(_try(tmp_path)))
        thread.start()
        thread.join()
        assert other == [False]
    assert not is_locked(tmp_path) and (tmp_path / LOCK).read_text() == ""


def _try(run_dir: Path) -> bool:
    with run_lock(run_dir, wait_s=0) as held:
        return held


def test_hold_run_names_the_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / LOCK).write_text('{"pid": 4242, "host": "node7", "command": "x", "since": "t"}')
    monkeypatch.setattr("alignment.runlock._try_lock", lambda fd, wait_s: False)
    with pytest.raises(RunLockedError, match=rf"{tmp_path} is in use .*pid 4242 on node7"):
        with hold_run(tmp_path):
            pass


def test_a_finished_run_in_a_read_only_folder_is_locked_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / LOCK).write_text("")
    real_open = os.open

    def read_only(path: str | Path, flags: int, *args: int) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with run_lock(tmp_path, wait_s=0) as held:
        assert held and is_locked(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / LOCK).read_text() == ""
    with pytest.raises(OSError, match="Read-only"):  # no lock file: the error stands
        monkeypatch.setattr(os, "open", read_only)
        with run_lock(tmp_path / "new", wait_s=0):
            pass


class FakeWorld:
    """A rank of a distributed run whose rank 0 said ``said`` (broadcast)."""

    def __init__(self, rank: int, said: object = None) -> None:
        self.is_main, self.said, self.sent = rank == 0, said, []

    def broadcast(self, obj: object) -> object:
        self.sent.append(obj)
        return obj if self.is_main else self.said


def test_under_torchrun_rank_0_locks_and_every_rank_learns_the_outcome(tmp_path: Path) -> None:
    with hold_run(tmp_path / "a", FakeWorld(1, (None, None))):  # rank 0 holds it
        assert not (tmp_path / "a").exists()  # the other ranks do not lock
    with pytest.raises(RunLockedError, match="in use by pid 7"):
        with hold_run(tmp_path / "b", FakeWorld(1, ("in use by pid 7", None))):
            pass
    with pytest.raises(RuntimeError, match=r"rank 0 could not lock .*: read-only"):
        with hold_run(tmp_path / "c", FakeWorld(1, (None, "read-only"))):
            pass
    rank0 = FakeWorld(0)
    with run_lock(tmp_path / "d"):
        thread = ThreadPoolExecutor(1)
        with pytest.raises(RunLockedError, match="is in use by another process"):
            thread.submit(lambda: hold_run(tmp_path / "d", rank0, wait_s=0).__enter__()).result()
        thread.shutdown()
    assert rank0.sent and "is in use" in rank0.sent[0][0]  # rank 0 told the others


# ------------------------------------------------------------------------------ changed config
@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lr=0.01", "optim.lr: 0.05 there, 0.01 now"),
        ("rule.name=frsf", "rule.name: 'fa' there, 'frsf' now"),
        ("epochs=1", "epochs: 2 there, 1 now"),
    ],
)
def test_train_refuses_a_folder_of_another_config(
    runs: dict[str, Path],
    interrupted: Path,
    override: str,
    fragment: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = snapshot(interrupted / "seed0")
    code = main(["train", str(runs["config"]), "--out", str(interrupted), "--set", override])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert fragment in error and "another --out" in error and f"delete {interrupted}" in error
    assert snapshot(interrupted / "seed0") == before


def test_a_finished_folder_of_another_config_is_refused_not_skipped(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(runs["reference"], out / "seed0")
    assert main(["train", str(runs["config"]), "--out", str(out), "--set", "optim.lr=0.5"]) == 2
    assert "optim.lr: 0.05 there, 0.5 now" in capsys.readouterr().err
    assert main(["train", str(runs["config"]), "--out", str(out)]) == 0  # the same: skipped


def test_locations_and_the_name_may_differ(runs: dict[str, Path], interrupted: Path) -> None:
    sets = ["name=moved", f"data.root={interrupted / 'elsewhere'}", "device=cpu"]
    args = ["train", str(runs["config"]), "--out", str(interrupted), "--quiet"]
    assert main([*args, *(f"--set={s}" for s in sets)]) == 0
    assert_same_record(interrupted / "seed0", runs["reference"])


# ------------------------------------------------------------------------------ checkpoints
def edit_checkpoint(run_dir: Path, **changes: object) -> None:
    path = run_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save(state, path)


def resume_error(
    run_dir: Path, capsys: pytest.CaptureFixture[str], *, unchanged: bool = True
) -> str:
    """The one-line error of ``alignment resume run_dir`` (exit 2); ``unchanged``: refused
    before anything in the folder was touched."""
    before = snapshot(run_dir)
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("alignment: error:"), error
    assert not (run_dir / "DONE").exists()
    if unchanged:
        assert snapshot(run_dir) == before
    return error


@pytest.mark.parametrize("step", [10**9, 9, -1])
def test_a_checkpoint_step_outside_the_run_is_refused(
    interrupted: Path, step: int, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = interrupted / "seed0"
    edit_checkpoint(run_dir, step=step)
    error = resume_error(run_dir, capsys)
    assert f"at step {step}, outside this run's steps 0..8" in error
    assert f"delete {run_dir / 'checkpoint.pt'}" in error


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[: len(data) // 2],
        lambda data: np.random.default_rng(0).bytes(4096),
    ],
    ids=["empty", "truncated", "random"],
)
def test_an_unreadable_checkpoint_is_one_line_naming_the_file_and_the_fix(
    interrupted: Path, damage: Callable[[bytes], bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = interrupted / "seed0"
    path = run_dir / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    error = resume_error(run_dir, capsys)
    assert f"{path} is not a readable checkpoint" in error and f"delete {path}" in error
    if len(path.read_bytes()) == 0:  # once: through `train`, and the fix
        config = str(run_dir / "config.yaml")
        assert main(["train", config, "--out", str(interrupted), "--quiet"]) == 2
        assert f"{path} is not a readable checkpoint" in capsys.readouterr().err
        path.unlink()  # without the checkpoint the run restarts from step 0
        assert main(["resume", str(run_dir), "--quiet"]) == 0
        assert (run_dir / "DONE").exists()


def test_a_checkpoint_of_another_rule_or_model_is_refused(
    interrupted: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = interrupted / "seed0"
    edit_checkpoint(run_dir, rule="bp")
    assert "written under rule 'bp', the run's config trains 'fa'" in resume_error(run_dir, capsys)
    # Checkpoints from before they named their rule and config: the structural checks.
    edit_checkpoint(run_dir, rule=None, config=None)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    name = next(k for k in state if k.endswith("weight"))
    edit_checkpoint(run_dir, model={**state, name: state[name][:1]})
    assert f"{name} has shape" in resume_error(run_dir, capsys)
    edit_checkpoint(run_dir, model={k: v for k, v in state.items() if k != name})
    assert f"another model or rule (lacks {name})" in resume_error(run_dir, capsys)


def test_a_checkpoint_under_another_config_is_refused(
    interrupted: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``config.yaml`` edited by hand: the checkpoint (or, for an old checkpoint, the record)
    names the config the run was trained under."""
    run_dir = interrupted / "seed0"
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**stored, "epochs": 3}))
    assert "epochs: 2 in the checkpoint, 3 in the run config" in resume_error(run_dir, capsys)
    edit_checkpoint(run_dir, rule=None, config=None)
    assert "epochs: 2 in the record, 3 now" in resume_error(run_dir, capsys, unchanged=False)


def test_a_record_that_lost_steps_is_refused(
    interrupted: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = interrupted / "seed0"
    shutil.rmtree(run_dir / "record.zarr")
    error = resume_error(run_dir, capsys, unchanged=False)
    assert "the checkpoint was saved after step" in error and "it holds no records" in error


def test_an_old_checkpoint_without_rule_and_config_still_resumes(
    runs: dict[str, Path], interrupted: Path
) -> None:
    edit_checkpoint(interrupted / "seed0", rule=None, config=None)
    resume(interrupted / "seed0", quiet=True)
    assert_same_record(interrupted / "seed0", runs["reference"])


# ------------------------------------------------------------------------------ OS errors
def test_a_full_disk_removes_the_temporary_file_and_names_the_cause(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(state: object, handle: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    with pytest.raises(OSError) as raised:
        save_checkpoint(tmp_path, {"step": 1})
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "checkpoint.pt.tmp")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_in_train_is_one_line_and_the_run_resumes(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = checkpoint_module.torch.save

    def fills_up(state: dict, handle: object) -> None:
        if state["step"] >= STOP:  # torch wraps the write error in a RuntimeError
            handle.write(b"partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as error:
                raise RuntimeError("[enforce fail] PytorchStreamWriter failed") from error
        real(state, handle)

    monkeypatch.setattr(checkpoint_module.torch, "save", fills_up)
    out = tmp_path / "out"
    assert main(["train", str(runs["config"]), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    tmp = out / "seed0" / "checkpoint.pt.tmp"
    assert error.splitlines() == [
        f"alignment: error: no space left on device while writing {tmp}: free some space (or "
        "use another --out), then run the same command again: an interrupted run resumes from "
        "its last checkpoint"
    ]
    assert not tmp.exists() and torch.load(tmp.with_suffix(""), weights_only=True)["step"] == 2
    monkeypatch.undo()
    assert main(["train", str(runs["config"]), "--out", str(out), "--quiet"]) == 0
    assert_same_record(out / "seed0", runs["reference"])


def test_a_full_disk_while_recording_is_one_line_and_leaves_no_temporary_files(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if "main" in self.parts:  # the record's step segments
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "out"
    assert main(["train", str(runs["config"]), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no space left on device while writing" in error[0]
    assert str(out / "seed0" / "record.zarr" / "main") in error[0]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_a_read_only_output_folder_is_one_line(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "out"
    assert main(["train", str(runs["config"]), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"alignment: error: read-only file system at {out / 'seed0'}: choose a folder on a "
        "writable file system (--out)"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission_is_one_line(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o555)
    try:
        assert main(["train", str(runs["config"]), "--out", str(tmp_path / "out")]) == 2
    finally:
        tmp_path.chmod(0o755)
    error = capsys.readouterr().err.strip()
    assert error.startswith("alignment: error: permission denied at ") and "--out" in error


def test_cuda_without_a_gpu_names_the_cpu_switch(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    assert main(["train", str(runs["config"]), "--out", str(out), "--device", "cuda"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "CUDA is not available" in error
    assert "--device cpu" in error and "--set device=cpu" in error
    assert not out.exists()
    with pytest.raises(ConfigError, match="--device cpu"):
        train(config_from_dict({**CONFIG, "device": "cuda"}), out, quiet=True)


def test_a_second_writer_in_another_thread_writes_nothing(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def second() -> None:
        try:
            train(config_from_dict(CONFIG), tmp_path, quiet=True)
        except RunLockedError as error:
            errors.append(error)

    with run_lock(tmp_path / "seed0"):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"{tmp_path / 'seed0'} is in use" in str(errors[0])
    assert [p.name for p in (tmp_path / "seed0").iterdir()] == [LOCK]


# ------------------------------------------------------------------------------ sweep workers
def children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` and their command lines (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = command
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that nobody reaped has died)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc")
def test_sweep_workers_die_with_a_killed_sweep(tmp_path: Path) -> None:
    from alignment.sweeps import expand, load_spec
    from tests.test_sweep_executors import TINY_SET, tiny_spec

    spec = tiny_spec(tmp_path, set={**TINY_SET, "epochs": 40, "max_steps_per_epoch": 50})
    out = tmp_path / "out"
    runs = expand(load_spec(spec), out)
    command = [sys.executable, "-m", "alignment", "sweep", str(spec), "--out", str(out)]
    sweep = subprocess.Popen(
        [*command, "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while True:  # until both workers train (each holds its run's lock)
            found = children(sweep.pid)
            workers = {pid for pid, line in found.items() if "spawn_main" in line}
            holders = {
                pid for pid in workers for r in runs if f'"pid": {pid},' in _read(r.run_dir / LOCK)
            }
            if len(workers) == 2 and holders == workers:
                break
            assert sweep.poll() is None and time.monotonic() < deadline, "no workers trained"
            time.sleep(0.05)
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait()
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their sweep"
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        sweep.kill()
        sweep.wait()
    # A killed process's lock goes when its last thread has closed its files, which may be a
    # moment after /proc shows its leader as a zombie; allow that moment, not a forked child that
    # keeps the lock's descriptor (seconds: test_loader_workers_forked_under_the_lock_...).
    deadline = time.monotonic() + 1
    while any(is_locked(run.run_dir) for run in runs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(is_locked(run.run_dir) for run in runs)
    assert not any((run.run_dir / "DONE").exists() for run in runs)


def test_the_watchdog_fallback_exits_once_the_parent_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alignment.sweeps import local

    exits: list[int] = []
    monkeypatch.setattr(local.os, "_exit", exits.append)
    local._watch_parent(os.getppid() + 1)  # not the parent (any more): exits at once
    assert exits == [1]
    if sys.platform.startswith("linux"):
        assert local._parent_death_signal(0)  # prctl is reachable (signal 0: none)


def test_loader_workers_forked_under_the_lock_do_not_keep_it(tmp_path: Path) -> None:
    """Persistent DataLoader workers are forked while the run holds its lock and live on after
    it: the lock is released when the run ends (and so when its process is killed), not when
    the workers exit."""
    data = torch.utils.data.TensorDataset(torch.arange(8.0))
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=1, persistent_workers=True)
    with run_lock(tmp_path / "run") as acquired:
        assert acquired
        assert len(list(loader)) == 2  # the worker is forked here, holding a copy of the fd
        assert is_locked(tmp_path / "run")
    try:
        assert not is_locked(tmp_path / "run"), "the loader's worker kept the run locked"
    finally:
        del loader  # shuts the persistent worker down
