"""``torchrun --nproc_per_node 2 -m alignment train`` on CPU (gloo) trains what one process trains
on the same global batches: weights, learned feedback (PFA's R, KP's B) and the whole record
agree within float tolerance, for rules with learned, masked, redrawn and direct feedback; a
killed distributed run resumes to the same result."""

from __future__ import annotations

import os
import shutil
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
from torch.utils.data import TensorDataset

from alignment.config import config_from_dict
from alignment.recording import open_run, validate
from alignment.training import train
from alignment.training.batches import Batches
from tests.test_training import checkpoint_step, data_of

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
    "torchrun"
)
pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")

TINY = {
    "name": "ddp",
    "model": {"name": "mlp"},
    "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 500},
    "optim": {"lr": 0.05, "weight_decay": 0.01},
    "wd_schedule": {"gamma": 0.1, "burst_steps": 5},
    "epochs": 2,
    "max_steps_per_epoch": 5,
    "record": {"every": 2, "jacobian": "epoch", "probe_size": 4, "flush_every": 2},
    "checkpoint_every": 2,
    "device": "cpu",
}


def _config(rule: dict, **changes: object) -> dict:
    return {**yaml.safe_load(yaml.safe_dump(TINY)), "rule": rule, **changes}


def _torchrun(*args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "alignment", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(command, env=environment, **popen)


def _assert_same_training(run_dir: Path, reference_dir: Path) -> None:
    ours = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    theirs = torch.load(reference_dir / "checkpoint.pt", weights_only=True)["model"]
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6, msg=name)
    validate(open_run(run_dir))
    a, b = data_of(open_run(run_dir)), data_of(open_run(reference_dir))
    assert a.attrs == b.attrs and list(a.data_vars) == list(b.data_vars)
    xr.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "pfa", "k": 2},  # learned R, synchronised as a parameter
        {"name": "kp"},  # learned B
        {"name": "dfa", "density": 0.5},  # each rank's own output error; masks
        {"name": "brsf"},  # B redrawn at every forward from the (shared) seed
    ],
    ids=lambda rule: rule["name"],
)
def test_two_processes_train_what_one_process_trains(tmp_path: Path, rule: dict) -> None:
    config = _config(rule)
    (reference,) = train(config_from_dict(config), tmp_path / "single", quiet=True)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    process = _torchrun(
        "train", str(config_file), "--out", str(tmp_path / "ddp"), "--quiet", stderr=subprocess.PIPE
    )
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    _assert_same_training(tmp_path / "ddp" / "seed0", reference.run_dir)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children before grandchildren."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants at once. torchrun starts each rank in a session of
    its own, so killing torchrun's process group leaves the ranks running."""
    for each in [pid, *_descendants(pid)]:
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_killed_distributed_run_resumes_to_the_single_process_result(tmp_path: Path) -> None:
    config = _config({"name": "pfa", "k": 2}, epochs=6, checkpoint_every=1)
    (reference,) = train(config_from_dict(config), tmp_path / "single", quiet=True)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "ddp" / "seed0"
    process = _torchrun(
        "train",
        str(config_file),
        "--out",
        str(tmp_path / "ddp"),
        "--quiet",
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while checkpoint_step(run_dir) < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "the distributed run made no progress"
        time.sleep(0.01)
    _kill_tree(process.pid)  # torchrun and both ranks (each rank has a session of its own)
    process.wait()
    assert not (run_dir / "DONE").exists(), "the run finished before it could be killed"
    killed_at = checkpoint_step(run_dir)
    resumed = _torchrun("resume", str(run_dir), "--quiet", stderr=subprocess.PIPE)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-3000:]
    assert (run_dir / "DONE").exists() and 3 <= killed_at < 30
    _assert_same_training(run_dir, reference.run_dir)


def test_the_ranks_batches_together_are_the_single_process_batch() -> None:
    dataset = TensorDataset(torch.arange(203.0), torch.arange(203))
    single = [y for _, y in Batches(dataset, 24, seed=7).epoch(3, start=2)]
    ranks = [
        [y for _, y in Batches(dataset, 24, seed=7, rank=r, world_size=4).epoch(3, start=2)]
        for r in range(4)
    ]
    assert all(len(batches) == len(single) == 6 for batches in ranks)
    for i, batch in enumerate(single):
        interleaved = torch.stack([batches[i] for batches in ranks], dim=1).flatten()
        assert torch.equal(interleaved, batch)  # what World.gather rebuilds on rank 0


def test_a_batch_size_the_ranks_cannot_share_is_a_clear_error() -> None:
    dataset = TensorDataset(torch.zeros(100), torch.zeros(100))
    with pytest.raises(ValueError, match=r"batch_size 30 is not divisible by the 4 processes"):
        Batches(dataset, 30, seed=0, world_size=4)


def test_single_process_batches_are_unchanged_by_the_sampler() -> None:
    """The sampler keeps the single-process order of earlier runs (seeded randperm)."""
    dataset = TensorDataset(torch.arange(100.0), torch.arange(100))
    generator = torch.Generator().manual_seed(5 * 1_000_003 + 2)
    order = torch.randperm(100, generator=generator)
    batches = [y for _, y in Batches(dataset, 10, seed=5).epoch(2)]
    np.testing.assert_array_equal(torch.cat(batches).numpy(), order.numpy())
