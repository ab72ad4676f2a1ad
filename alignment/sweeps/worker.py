"""Train one run of a sweep, whichever executor runs it: skip it if done, resume it if
interrupted, record a failure in ``<run_dir>/ERROR``, and hold ``<run_dir>/.lock`` meanwhile.

The lock (``flock``) keeps two sweeps started on the same folder from training the same run at
once (the second skips it) and tells ``sweep-status`` that a run is running. On a file system
without locks the run goes ahead unlocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alignment.config import Config
from alignment.training.checkpoint import CHECKPOINT
from alignment.training.trainer import DONE, train_run

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

ERROR = "ERROR"
LOCK = ".lock"
LOCK_WAIT_S = 2.0  # how long train_one waits for a lock held by someone else


@dataclass(frozen=True)
class Outcome:
    """What :func:`train_one` did: ``trained``, ``resumed``, ``skipped`` (already done) or
    ``running`` (another process holds the run's lock); accuracies when the run is done."""

    run_dir: Path
    action: str
    final_accuracy: float | None = None
    steps: int | None = None
    seconds: float = 0.0


@contextlib.contextmanager
def run_lock(run_dir: Path, wait_s: float | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on ``run_dir/.lock``; yields False if another process holds it
    for ``wait_s`` seconds (default :data:`LOCK_WAIT_S`; a status check holds it only for an
    instant)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield True
        return
    with open(run_dir / LOCK, "a+") as handle:
        deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                held = False
            except OSError:  # no locks on this file system
                held = True
            break
        yield held


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds ``run_dir``'s lock, i.e. is training the run right now."""
    path = run_dir / LOCK
    if fcntl is None or not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
    return False


def train_one(
    config: Config,
    run_dir: Path | str,
    seed: int,
    *,
    device: str | None = None,
    threads: int | None = None,
    distributed: bool = False,
) -> Outcome:
    """Train ``config`` with ``seed`` into ``run_dir`` unless it is done or running elsewhere;
    resume it from its checkpoint if it has one. An exception is written (with its traceback)
    to ``run_dir/ERROR`` and raised again.

    ``distributed``: this process is one rank of a data-parallel run (its environment says
    which); every rank trains, without the lock (a rank that skipped would leave the others
    waiting), and rank 0 writes ``ERROR``.
    """
    with _torch_threads(threads):
        return _train_one(config, Path(run_dir), seed, device, distributed)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Train with ``threads`` torch threads, then restore the caller's (a run trained in this
    process must not change how the rest of it computes)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train_one(
    config: Config, run_dir: Path, seed: int, device: str | None, distributed: bool
) -> Outcome:
    start = time.monotonic()
    lock = contextlib.nullcontext(True) if distributed else run_lock(run_dir)
    with lock as held:
        if not held:
            return Outcome(run_dir, "running")
        if (run_dir / DONE).exists():
            info = json.loads((run_dir / DONE).read_text())
            return Outcome(run_dir, "skipped", info["final_accuracy"], info["steps"])
        main = os.environ.get("RANK", "0") == "0" if distributed else True
        if main:
            (run_dir / ERROR).unlink(missing_ok=True)
        resume = (run_dir / CHECKPOINT).exists()
        try:
            result = train_run(config, run_dir, seed, device=device, quiet=True, resume=resume)
        except Exception:
            if main:
                (run_dir / ERROR).write_text(traceback.format_exc())
            raise
    action = "resumed" if resume else "trained"
    return Outcome(run_dir, action, result.final_accuracy, result.steps, time.monotonic() - start)
