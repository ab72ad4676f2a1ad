"""Where each run of a sweep stands: done, running, failed, interrupted or pending.

* ``done``: ``DONE`` exists (final and best accuracy, steps);
* ``running``: a process holds the run's lock (see :mod:`alignment.runlock`); a run
  training on another node shows as ``interrupted`` where the file system does not share
  ``flock`` locks between machines;
* ``failed``: the last attempt left ``ERROR`` (its last line is shown); a re-run retries it;
* ``interrupted``: a checkpoint or a record but no ``DONE``: a re-run resumes it from the
  checkpoint (or restarts it when it stopped before its first one); a run killed by Slurm or
  by a crash of the machine shows here too;
* ``pending``: nothing yet.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alignment.runlock import is_locked
from alignment.summary import percent
from alignment.sweeps.expand import Run
from alignment.sweeps.worker import ERROR
from alignment.training.checkpoint import CHECKPOINT
from alignment.training.trainer import DONE


class Status(StrEnum):
    DONE = "done"
    RUNNING = "running"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PENDING = "pending"


@dataclass(frozen=True)
class RunState:
    """A run, its status and a one-line detail (accuracy, progress or error)."""

    run: Run
    status: Status
    detail: str = ""


def _progress(run_dir: Path, epochs: int) -> str:
    path = run_dir / CHECKPOINT
    if not path.exists():
        return "no checkpoint yet (restarts from step 0)"
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a checkpoint being written, or a broken one
        return f"checkpoint unreadable ({type(error).__name__})"
    accuracies = list(state.get("accuracies", []))
    last = f", last accuracy {percent(accuracies[-1])}" if accuracies else ""
    return f"step {state['step']}, epoch {len(accuracies)}/{epochs}{last}"


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "(empty)")


def run_state(run: Run) -> RunState:
    """The status of one run, read from its folder."""
    run_dir = run.run_dir
    if (run_dir / DONE).exists():
        info = json.loads((run_dir / DONE).read_text())
        detail = (
            f"final {percent(info['final_accuracy'])}, best {percent(info['best_accuracy'])}, "
            f"{info['steps']} steps"
        )
        return RunState(run, Status.DONE, detail)
    if is_locked(run_dir):
        return RunState(run, Status.RUNNING, _progress(run_dir, run.config.epochs))
    if (run_dir / ERROR).exists():
        return RunState(run, Status.FAILED, _last_line(run_dir / ERROR))
    if (run_dir / CHECKPOINT).exists() or (run_dir / "record.zarr").exists():
        return RunState(run, Status.INTERRUPTED, _progress(run_dir, run.config.epochs))
    return RunState(run, Status.PENDING)


def run_states(runs: list[Run]) -> list[RunState]:
    """:func:`run_state` of every run, in order."""
    return [run_state(run) for run in runs]


def todo(states: list[RunState]) -> list[RunState]:
    """The runs a sweep still has to train: not done and not running elsewhere."""
    return [s for s in states if s.status not in (Status.DONE, Status.RUNNING)]


def summary(states: list[RunState]) -> str:
    """``"30 runs: 12 done, 1 running, 2 failed, 3 interrupted, 12 pending"``."""
    counts = Counter(s.status for s in states)
    parts = [f"{counts[s]} {s.value}" for s in Status if counts[s]]
    return f"{len(states)} runs: {', '.join(parts) or 'none'}"


def table(states: list[RunState]) -> str:
    """One line per run: run ID, status, detail."""
    width = max([len("run"), *(len(s.run.run_id) for s in states)])
    lines = [f"{'run':<{width}}  {'status':<11}  detail"]
    lines += [f"{s.run.run_id:<{width}}  {s.status.value:<11}  {s.detail}".rstrip() for s in states]
    return "\n".join(lines)


def other_run_dirs(out: Path, runs: list[Run]) -> list[Path]:
    """Run folders under ``out`` that are not runs of this sweep (e.g. of an earlier version of
    its spec, whose configs hash differently)."""
    if not out.is_dir():
        return []
    mine = {run.run_dir.resolve() for run in runs}
    found = {p.parent.resolve() for p in out.glob("*/config.yaml")}
    return sorted(found - mine)
