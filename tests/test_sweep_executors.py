"""Sweeps end to end without a cluster: the local process pool through the CLI, a sweep
interrupted halfway and re-run (only the missing runs train), submitit's debug executor on the
Slurm code path, and the sbatch script a submission writes (with stand-ins for sbatch/srun)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from submitit.core.utils import DelayedSubmission

from alignment import runlock
from alignment.cli import main
from alignment.sweeps import expand, load_spec
from alignment.sweeps import worker as worker_module
from alignment.sweeps.status import Status, run_states
from alignment.sweeps.worker import train_one
from alignment.training.trainer import train_run
from tests.test_sweeps import TINY_SET as SWEEP_TINY_SET

TINY_SET = {**SWEEP_TINY_SET, "device": "cpu"}


def tiny_spec(folder: Path, **changes: Any) -> Path:
    """4 runs: demo/bp and demo/fa × seeds 0, 1, a few steps each on sklearn's digits."""
    spec = {
        "name": "tiny",
        "set": TINY_SET,
        "axes": {"config": ["demo/bp", "demo/fa"], "seed": [0, 1]},
        **changes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


class Calls:
    """Replaces the worker's ``train_run``, recording (run folder name, resume) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, config: Any, run_dir: Path, seed: int, **kwargs: Any) -> Any:
        self.calls.append((Path(run_dir).name, kwargs["resume"]))
        return train_run(config, run_dir, seed, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny sweep trained through the CLI with 2 worker processes: (spec, out)."""
    folder = tmp_path_factory.mktemp("sweep")
    spec, out = tiny_spec(folder), folder / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2"]) == 0
    return spec, out


def test_local_sweep_with_two_jobs_trains_every_run(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = finished
    runs = expand(load_spec(spec), out)
    assert [s.status for s in run_states(runs)] == [Status.DONE] * 4
    for run in runs:
        stored = yaml.safe_load((run.run_dir / "config.yaml").read_text())
        assert stored == run.config.to_dict() and stored["seeds"] == [run.seed]
        assert json.loads((run.run_dir / "DONE").read_text())["steps"] == 2
    assert (out / "sweep.yaml").read_text() == spec.read_text()
    # A second sweep has nothing to do; sweep-status reports accuracies.
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["sweep-status", str(spec), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count(" done ") == 4 and "4 runs: 4 done" in printed


def test_an_interrupted_sweep_rerun_trains_only_the_missing_runs(
    finished: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, source = finished
    out = tmp_path / "out"
    shutil.copytree(source, out)
    untouched, resumed, restarted, failed = expand(load_spec(spec), out)
    # Halfway: one run lost its DONE (its checkpoint is left), one never started, one failed.
    (resumed.run_dir / "DONE").unlink()
    shutil.rmtree(restarted.run_dir)
    (failed.run_dir / "DONE").unlink()
    (failed.run_dir / "checkpoint.pt").unlink()
    (failed.run_dir / "ERROR").write_text("Traceback ...\nRuntimeError: node died\n")
    before = {p.name: stamp(p) for p in untouched.run_dir.rglob("*") if p.is_file()}
    states = [s.status for s in run_states([untouched, resumed, restarted, failed])]
    assert states == [Status.DONE, Status.INTERRUPTED, Status.PENDING, Status.FAILED]

    calls = Calls()
    monkeypatch.setattr(worker_module, "train_run", calls)
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    assert sorted(calls.calls) == sorted(
        [(resumed.run_id, True), (restarted.run_id, False), (failed.run_id, False)]
    )
    after = {p.name: stamp(p) for p in untouched.run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert not (failed.run_dir / "ERROR").exists()
    assert "4 runs: 4 done" in capsys.readouterr().out
    calls.calls.clear()
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    assert calls.calls == []


def test_a_failing_run_leaves_error_and_the_others_finish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tiny_spec(
        tmp_path,
        axes={"optim.lr": [0.01, 1.0e30], "seed": [0]},
        config="demo/bp",
    )
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "FAILED lr1e+30-seed0" in printed and "DivergenceError" in printed
    ok, diverged = expand(load_spec(spec), out)
    assert (ok.run_dir / "DONE").exists()
    assert "DivergenceError" in (diverged.run_dir / "ERROR").read_text()
    assert [s.status for s in run_states([ok, diverged])] == [Status.DONE, Status.FAILED]


def test_train_one_skips_a_run_another_process_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runlock, "LOCK_WAIT_S", 0.1)
    run = expand(load_spec(tiny_spec(tmp_path)), tmp_path / "out")[0]
    with ThreadPoolExecutor(1) as other:  # the lock is re-entrant in its thread only
        with runlock.run_lock(run.run_dir):
            outcome = other.submit(train_one, run.config, run.run_dir, run.seed).result()
    assert outcome.action == "running"
    assert not (run.run_dir / "config.yaml").exists()


def test_train_one_leaves_the_callers_torch_threads_alone(tmp_path: Path) -> None:
    import torch

    run = expand(load_spec(tiny_spec(tmp_path)), tmp_path / "out")[0]
    before = torch.get_num_threads()
    outcome = train_one(run.config, run.run_dir, run.seed, threads=before + 1)
    assert outcome.action == "trained" and torch.get_num_threads() == before


def test_submitit_debug_executor_runs_the_slurm_path_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tiny_spec(tmp_path, axes={"config": ["demo/bp", "demo/fa"], "seed": [0]})
    out = tmp_path / "out"
    args = ["sweep", str(spec), "--out", str(out), "--executor", "slurm"]
    assert main([*args, "--submitit-cluster", "debug"]) == 0
    printed = capsys.readouterr().out
    assert "submitted array job DEBUG" in printed and "2 runs: 2 done" in printed
    runs = expand(load_spec(spec), out)
    lines = [
        json.loads(line) for line in (out / ".submitit" / "jobs.jsonl").read_text().splitlines()
    ]
    assert [line["run_id"] for line in lines] == [run.run_id for run in runs]
    for run, line in zip(runs, lines, strict=True):
        assert (run.run_dir / "DONE").exists()
        log = run.run_dir / "slurm" / f"{line['job_id']}_log.out"
        assert log.is_symlink() and log.resolve().parent == (out / ".submitit").resolve()
        assert log.exists()  # the debug executor wrote its log there
    assert main([*args, "--submitit-cluster", "debug"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def fake_slurm(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sbatch`` (answers like Slurm, submits nothing) and ``srun`` on PATH."""
    folder.mkdir()
    (folder / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 4242"\n')
    (folder / "srun").write_text("#!/bin/sh\nexit 1\n")
    for name in ("sbatch", "srun"):
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_the_submitted_sbatch_script_asks_for_the_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_slurm(tmp_path / "bin", monkeypatch)
    slurm = {
        "partition": "cpu",
        "time": 30,
        "account": "lab",
        "setup": ["module load cuda/12"],
        "additional_parameters": {"mail-type": "END"},
    }
    spec = tiny_spec(tmp_path, slurm=slurm)
    out = tmp_path / "out"
    runs = expand(load_spec(spec), out)
    args = ["sweep", str(spec), "--out", str(out), "--executor", "slurm", "--partition", "gpu"]
    args += ["--time", "1-02:00:00", "--gpus", "2", "--cpus", "3", "--mem-gb", "12", "--jobs", "3"]
    args += ["--tasks", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "submitted array job 4242 (slurm) with 4 run(s)" in printed
    assert f"follow it with: alignment sweep-status {spec} --out {out}" in printed
    folder = (out / ".submitit").absolute()
    script = (folder / "4242_submission.sh").read_text()
    flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
    assert {
        "#SBATCH --partition=gpu",
        "#SBATCH --time=1560",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --mem=12GB",
        "#SBATCH --array=0-3%3",
        "#SBATCH --account=lab",
        "#SBATCH --mail-type=END",
        "#SBATCH --job-name=alignment-tiny",
        f"#SBATCH --output={folder}/%A_%a_0_log.out",
        f"#SBATCH --error={folder}/%A_%a_0_log.err",
    } <= flags
    assert "module load cuda/12" in script
    assert f"-m submitit.core._submit {folder}" in script
    # Array task i trains run i; its logs are linked from the run's folder.
    for index, run in enumerate(runs):
        link = run.run_dir / "slurm" / f"4242_{index}_log.out"
        assert os.readlink(link) == f"../../.submitit/4242_{index}_0_log.out"
        task = DelayedSubmission.load(folder / f"4242_{index}_submitted.pkl")
        assert task.args[1:3] == (str(run.run_dir.absolute()), run.seed)
    # What a compute node runs: the pickled task of array index 2 trains its run.
    task = DelayedSubmission.load(folder / "4242_2_submitted.pkl")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert task.result().action == "trained"
    assert [s.status for s in run_states(runs)] == [Status.PENDING] * 2 + [
        Status.DONE,
        Status.PENDING,
    ]


def test_slurm_without_sbatch_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    spec = tiny_spec(tmp_path)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--executor", "slurm"]) == 2
    assert "--dry-run prints the sbatch script" in capsys.readouterr().err


@pytest.mark.slow
def test_submitit_local_executor_runs_the_slurm_path_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tiny_spec(tmp_path, axes={"config": ["demo/bp", "demo/fa"], "seed": [0]})
    out = tmp_path / "out"
    args = ["sweep", str(spec), "--out", str(out), "--executor", "slurm"]
    assert main([*args, "--submitit-cluster", "local"]) == 0
    assert "2 runs: 2 done" in capsys.readouterr().out
    for run in expand(load_spec(spec), out):
        (log,) = (run.run_dir / "slurm").glob("*_log.out")
        assert log.exists()


@pytest.mark.slow
def test_a_sweep_killed_halfway_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL ``alignment sweep`` once a run has finished, then re-run it: the finished runs
    are left alone, the one it was in resumes from its checkpoint, the rest start."""
    spec = tiny_spec(
        tmp_path,
        set={**TINY_SET, "epochs": 3, "max_steps_per_epoch": 12, "checkpoint_every": 3},
    )
    out = tmp_path / "out"
    runs = expand(load_spec(spec), out)
    command = [sys.executable, "-m", "alignment", "sweep", str(spec), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (runs[1].run_dir / "checkpoint.pt").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    done = [r for r in runs if (r.run_dir / "DONE").exists()]
    assert done and len(done) < len(runs)
    has_checkpoint = {r.run_id for r in runs if (r.run_dir / "checkpoint.pt").exists()}
    before = {p: stamp(p) for r in done for p in r.run_dir.rglob("*") if p.is_file()}

    calls = Calls()
    monkeypatch.setattr(worker_module, "train_run", calls)
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    missing = [r for r in runs if r not in done]
    assert calls.calls == [(r.run_id, r.run_id in has_checkpoint) for r in missing]
    assert any(resume for _, resume in calls.calls)
    assert {p: stamp(p) for p in before} == before
    assert all((r.run_dir / "DONE").exists() for r in runs)


def test_a_run_over_two_slurm_tasks_trains_data_parallel_like_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tasks_per_node: 2``: the two tasks of the job are the ranks of one DDP run (gloo here,
    through submitit's local executor), which trains what one process trains."""
    import torch

    from alignment.config import config_from_dict

    spec = tiny_spec(
        tmp_path,
        axes={"config": ["demo/pfa"], "seed": [0]},
        slurm={"tasks_per_node": 2, "time": 10},
    )
    out = tmp_path / "out"
    args = ["sweep", str(spec), "--out", str(out), "--executor", "slurm"]
    assert main([*args, "--submitit-cluster", "local"]) == 0
    assert "1 runs: 1 done" in capsys.readouterr().out
    (run,) = expand(load_spec(spec), out)
    (reference,) = [train_run(run.config, tmp_path / "single", run.seed, quiet=True)]
    ours = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)["model"]
    theirs = torch.load(reference.run_dir / "checkpoint.pt", weights_only=True)["model"]
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=name)
    assert config_from_dict(run.config.to_dict()) == run.config
