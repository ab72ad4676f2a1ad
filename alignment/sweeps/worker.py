"""Train one run of a sweep, whichever executor runs it: skip it if done, resume it if
interrupted, record a failure in ``<run_dir>/ERROR``, and hold the run folder's lock meanwhile.

The lock (:mod:`alignment.runlock`, the one ``alignment train`` and ``resume`` hold)
keeps two sweeps started on the same folder from training the same run at once (the second
skips it) and tells ``sweep-status`` that a run is running. On a file system without locks the
run goes ahead unlocked.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alignment.config import Config
from alignment.runlock import RunLockedError, run_lock
from alignment.training.checkpoint import CHECKPOINT
from alignment.training.progress import ProgressOptions
from alignment.training.trainer import finished, train_run

ERROR = "ERROR"


@dataclass(frozen=True)
class Outcome:
    """What :func:`train_one` did: ``trained``, ``resumed``, ``skipped`` (already done) or
    ``running`` (another process holds the run's lock); accuracies when the run is done."""

    run_dir: Path
    action: str
    final_accuracy: float | None = None
    steps: int | None = None
    seconds: float = 0.0


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
    # Distributed: train_run locks on rank 0 and tells every rank whether the folder is taken.
    lock = contextlib.nullcontext(True) if distributed else run_lock(run_dir)
    with lock as held:
        if not held:
            return Outcome(run_dir, "running")
        done = finished(run_dir)
        if done is not None:
            return Outcome(run_dir, "skipped", done.final_accuracy, done.steps)
        main = os.environ.get("RANK", "0") == "0" if distributed else True
        if main:
            (run_dir / ERROR).unlink(missing_ok=True)
        resume = (run_dir / CHECKPOINT).exists()
        try:
            lines = ProgressOptions("lines", label=run_dir.name)  # into the job's log
            result = train_run(config, run_dir, seed, device=device, resume=resume, progress=lines)
        except RunLockedError:
            return Outcome(run_dir, "running")
        except Exception:
            if main:
                (run_dir / ERROR).write_text(traceback.format_exc())
            raise
    action = "resumed" if resume else "trained"
    return Outcome(run_dir, action, result.final_accuracy, result.steps, time.monotonic() - start)
