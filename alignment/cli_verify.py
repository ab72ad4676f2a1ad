"""``alignment verify`` and ``alignment repair``: the integrity of recorded runs.

* ``alignment verify RUNS…`` checks every file of each run's record (chunk checksums, segment
  manifests, the log's numbering and head) and, for a run of ``alignment train``, that the
  record holds what ``checkpoint.pt`` and ``DONE`` say was recorded. One line per run (``ok``)
  or per problem (``damaged``, naming the file); exit status 1 if any run is damaged.
* ``alignment repair RUNS…`` truncates each damaged record to its intact part
  (:func:`alignment.recording.integrity.repair`) and leaves the run folder so that
  ``alignment resume`` continues it without a gap: ``DONE`` goes (the record no longer covers
  the whole run), and a checkpoint that saw steps the record lost is moved aside to
  ``checkpoint.pt.ahead-of-record``, so that the run is trained again from step 0 (the same
  config and seed give the same record). A checkpoint within the intact part is kept and the run
  continues from it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

CHECKPOINT = "checkpoint.pt"
DONE = "DONE"
AHEAD = "checkpoint.pt.ahead-of-record"


def run_dirs(paths: list[str]) -> list[Path]:
    """Each path that is a run (it holds ``record.zarr`` or ``config.yaml``), else every run
    below it."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if (path / "record.zarr").exists() or (path / "config.yaml").exists():
            found.append(path)
            continue
        below = {p.parent for p in path.rglob("config.yaml")} | {
            p.parent for p in path.rglob("record.zarr")
        }
        if not below:
            raise FileNotFoundError(f"no run (record.zarr or config.yaml) at or below {path}")
        found += sorted(below)
    return list(dict.fromkeys(found))


def _checkpoint_problem(run_dir: Path) -> str | None:
    """Why the run's checkpoint cannot continue its record (None: it can, or there is none):
    the check a resume makes (:func:`alignment.recording.integrity.check_checkpoint`)."""
    from alignment.recording.integrity import DamagedRecordError, check_checkpoint
    from alignment.recording.store import SegmentStore
    from alignment.training.checkpoint import load_checkpoint

    path = run_dir / CHECKPOINT
    try:
        checkpoint = load_checkpoint(run_dir)
    except Exception as error:  # any unreadable checkpoint is reported, not raised
        return f"{path}: unreadable ({type(error).__name__}: {error})"
    if checkpoint is None:
        return None
    state = checkpoint.get("recorder", {}) if isinstance(checkpoint, dict) else {}
    try:
        check_checkpoint(SegmentStore(run_dir), state)
    except DamagedRecordError:
        recorded = state["last_recorded"]
        return f"{path}: saved after step {recorded} was recorded, which the record lacks"
    return None


def run_problems(run_dir: Path, held: int | None) -> list[str]:
    """What ``checkpoint.pt`` and ``DONE`` say was recorded and the record (ending at step
    ``held``) does not hold."""
    found = []
    problem = _checkpoint_problem(run_dir)
    if problem is not None:
        found.append(problem)
    if (run_dir / DONE).exists() and _done_problem(run_dir, held) is not None:
        found.append(_done_problem(run_dir, held))
    return found


def _done_problem(run_dir: Path, held: int | None) -> str | None:
    try:
        steps = int(json.loads((run_dir / DONE).read_text())["steps"])
    except (ValueError, KeyError, TypeError) as error:
        return f"{run_dir / DONE}: unreadable ({error})"
    if (-1 if held is None else held) < steps:  # the trainer records its final evaluation there
        return f"{run_dir / DONE}: the run finished its {steps} steps, but the record ends at " + (
            _step(held)
        )
    return None


def _step(step: int | None) -> str:
    return "no step (it is empty)" if step is None else f"step {step}"


def _summary(report: Any) -> str:
    parts = [
        f"{kind}: {'empty' if step is None else f'up to step {step}'}"
        for kind, step in report.last_steps.items()
    ]
    if report.format < 1:
        parts.append("written before checksums: its data is not verified")
    return ", ".join(parts)


def _verify_command(args: argparse.Namespace) -> int:
    from alignment.recording.integrity import held_last_step, verify
    from alignment.recording.store import SegmentStore

    damaged = []
    for run_dir in run_dirs(args.runs):
        if not (run_dir / "record.zarr").exists():  # a run not started, or one that lost it
            problems = run_problems(run_dir, None)
            problems = [f"{run_dir / 'record.zarr'}: missing", *problems] if problems else []
            report = None
        else:
            report = verify(run_dir)
            problems = list(report.problems)
            if report.ok:
                problems += run_problems(run_dir, held_last_step(SegmentStore(run_dir)))
        if not problems:
            summary = _summary(report) if report is not None else "no record yet"
            print(f"ok       {run_dir} ({summary})")
            continue
        damaged.append(run_dir)
        for problem in problems:
            print(f"damaged  {run_dir}: {problem}")
    if damaged:
        print(
            f"{len(damaged)} damaged run(s): `alignment repair RUN` keeps the intact part of each "
            "and says how to continue it"
        )
    return 1 if damaged else 0


def _repair_command(args: argparse.Namespace) -> int:
    from alignment.recording.integrity import repair
    from alignment.runlock import hold_run

    for run_dir in run_dirs(args.runs):
        with hold_run(run_dir):  # no writer may append while the log is cut
            result = repair(run_dir)
        ahead = run_problems(run_dir, result.last_step)
        if not result.problems and not ahead:
            print(f"{run_dir}: intact, nothing to repair")
            continue
        for problem in [*result.problems, *ahead]:
            print(f"{run_dir}: found {problem}")
        for path in result.removed:
            print(f"{run_dir}: removed {path}")
        if result.moved is not None:
            print(
                f"{run_dir}: its static part is damaged, nothing to keep: moved the record "
                f"to {result.moved}"
            )
        elif result.stop is not None:
            kept = "no steps" if result.last_step is None else f"steps up to {result.last_step}"
            print(f"{run_dir}: truncated the record at step {result.stop}: it holds {kept}")
        elif result.problems:
            print(f"{run_dir}: rewrote the log's metadata, kept every step")
        print(f"{run_dir}: {_continue(run_dir, result.last_step)}")
    return 0


def _continue(run_dir: Path, held: int | None) -> str:
    """Make the run folder consistent with its repaired record; how to continue it."""
    notes = []
    if (run_dir / DONE).exists() and _done_problem(run_dir, held) is not None:
        (run_dir / DONE).unlink()
        notes.append("removed DONE (the record no longer covers the whole run)")
    if (run_dir / DONE).exists():
        return "the run is complete"
    if (run_dir / CHECKPOINT).exists():
        if _checkpoint_problem(run_dir) is None:
            notes.append(f"`alignment resume {run_dir}` continues it from its checkpoint")
            return "; ".join(notes)
        os.replace(run_dir / CHECKPOINT, run_dir / AHEAD)
        notes.append(
            f"moved {CHECKPOINT} to {AHEAD}: it saw steps the record lost, so a resume from it "
            "would leave a gap"
        )
    if (run_dir / "config.yaml").exists():
        notes.append(
            f"`alignment resume {run_dir}` trains the run again from step 0 (the same config "
            "and seed give the same record)"
        )
    else:
        notes.append(
            "continue your training loop from a checkpoint taken at or before step "
            f"{0 if held is None else held + 1} (Recorder(resume=True) checks it), or restart it"
        )
    return "; ".join(notes)


def add_commands(subparsers: Any) -> None:
    """Register ``verify`` and ``repair`` on the ``alignment`` command's subparsers."""
    verify = subparsers.add_parser(
        "verify", help="check the integrity of recorded runs (checksums, missing files or steps)"
    )
    verify.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    verify.set_defaults(func=_verify_command)
    repair = subparsers.add_parser(
        "repair", help="truncate damaged records to their intact part, ready to resume"
    )
    repair.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    repair.set_defaults(func=_repair_command)
