"""Integrity of records: :func:`verify` (every problem of a run's record), :func:`repair`
(truncate it to its intact part), the checks before a resume, and opening many runs while
skipping the damaged ones.

What is checked (see :mod:`.manifest` and :mod:`.store`):

* every chunk has a CRC-32C (zarr's ``crc32c`` codec), verified by zarr whenever it is decoded:
  a flipped byte is an error naming the array's file, never a wrong value;
* every segment has a manifest (its files, their sizes and checksums, its steps): a missing or
  truncated file is an error naming it, never NaN;
* the log's entries are numbered without gaps, and each log's head names the last entry
  written: a deleted segment, first or last included, is an error naming it, never a gap;
* a resumed :class:`~alignment.recording.Recorder` checks the whole record first, and a
  checkpoint against it (the checkpoint names the last step it saw recorded, which the record
  must hold): a deleted ``record.zarr`` or lost segments refuse the resume.

Records written before manifests (no checksums, no heads) stay readable; what they lack is not
checked.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from alignment.recording import manifest
from alignment.recording.manifest import DamagedRecordError, hint
from alignment.recording.store import (
    KINDS,
    RECORD,
    STATIC,
    Entry,
    SegmentStore,
    _remove,
    read_zarr,
    run_path,
)

T = TypeVar("T")


class DamagedRunWarning(UserWarning):
    """A damaged run skipped by ``open_runs(..., on_damaged="skip")``."""


@dataclass
class Report:
    """The integrity of one run's record: ``problems`` (one ``"FILE: what"`` each; none: ok),
    the last step each log holds, and whether it was written with manifests (``format`` 1)."""

    run_dir: Path
    problems: list[str] = field(default_factory=list)
    last_steps: dict[str, int | None] = field(default_factory=dict)
    format: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _decode_problems(segment: Path) -> list[str]:
    """Problems decoding every array of a segment written without a manifest (old records)."""
    import zarr

    try:
        group = zarr.open_group(store=str(segment), mode="r", zarr_format=3)
        names = [name for name, _ in group.arrays()]
    except Exception as error:
        return [f"{segment}: cannot be read ({error})"]
    found = []
    for name in names:
        try:
            group[name][...]
        except Exception as error:
            found.append(f"{segment / name}: cannot be read ({error})")
    return found


def segment_problems(segment: Path, *, required: bool) -> list[str]:
    """Every problem of one segment, its data included: missing, resized or altered files (by
    the manifest's checksums), or, without a manifest, arrays that cannot be decoded."""
    found = manifest.problems(segment, required=required, data=True)
    if found or not segment.is_dir():
        return found
    if manifest.load(segment) is None:
        return _decode_problems(segment)
    return []


def _entry_problems(store: SegmentStore, kind: str, entry: Entry) -> list[str]:
    if entry.kind == "truncate":
        try:
            store.truncate_stop(entry.path)
        except DamagedRecordError as error:
            return [error.problem]
        return []
    return segment_problems(entry.path, required=_required(store, kind, entry))


def _head(store: SegmentStore, kind: str) -> dict[str, int] | None:
    """The log's head, None if it is missing or garbled (reported by the log's own check)."""
    try:
        return store.head(kind)
    except DamagedRecordError:
        return None


def _required(store: SegmentStore, kind: str, entry: Entry) -> bool:
    """Whether ``entry`` must have a manifest; by the record's format if the head is garbled."""
    try:
        return store.manifest_required(kind, entry)
    except DamagedRecordError:
        return entry.kind != "truncate" and store.format() >= 1


def verify(run_dir: str | os.PathLike) -> Report:
    """Check every file of a run's record (reads them all) and return every problem found."""
    store = SegmentStore(run_dir)
    report = Report(run_path(run_dir))
    if not store.root.is_dir():
        report.problems.append(f"{store.root}: missing")
        return report
    try:
        report.format = store.format()
    except DamagedRecordError as error:
        report.problems.append(error.problem)
        return report
    report.problems += segment_problems(store.root / STATIC, required=report.format >= 1)
    for kind in KINDS:
        found = store.log_problems(kind)
        if (store.root / kind / "zarr.json").exists():
            for entry in store.live_entries(kind):
                found += _entry_problems(store, kind, entry)
        report.problems += list(dict.fromkeys(found))
        if not found:
            report.last_steps[kind] = store.last_step(kind)
    return report


def check_resumable(store: SegmentStore) -> None:
    """Refuse to continue a damaged record: raise :class:`DamagedRecordError` listing the first
    problems and naming the repair command. Reads every file of the record."""
    report = verify(store.root.parent)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise DamagedRecordError(
            f"cannot resume {report.run_dir}: its record is damaged: {report.problems[0]}{more}",
            report.run_dir,
        )


def held_last_step(store: SegmentStore) -> int | None:
    """The last step the record holds, main and raw logs together (None: none)."""
    if not store.exists():
        return None
    steps = [s for s in (store.last_step(kind) for kind in KINDS) if s is not None]
    return max(steps) if steps else None


def recorded_steps(store: SegmentStore) -> set[int]:
    """Every step the record holds, main and raw logs together."""
    if not store.exists():
        return set()
    steps: set[int] = set()
    for kind, dim in KINDS.items():
        ds = store.read(kind, lazy=True)
        if ds is not None:
            steps.update(int(s) for s in ds[dim].values)
    return steps


def check_checkpoint(store: SegmentStore, state: dict[str, Any]) -> None:
    """Refuse a checkpoint that saw a record the record no longer holds (``record.zarr``
    deleted, segments lost): a resume would leave a gap in the steps. ``state``: the recorder's
    part of the checkpoint (:meth:`Recorder.state_dict` flushes before it names the last
    recorded step, which every later truncation keeps)."""
    recorded = int(state.get("last_recorded", -1))
    if recorded < 0:
        return
    steps = recorded_steps(store)
    if recorded not in steps:
        run = store.root.parent
        holds = "it holds no records" if not steps else f"its last step is {max(steps)}"
        raise DamagedRecordError(
            f"cannot resume {run}: the checkpoint was saved after step {recorded} was recorded, "
            f"but {store.root} does not hold it ({holds}): records were deleted or lost, and "
            "resuming would leave a gap. Restart the run from its beginning (for a run of "
            f"`alignment train`: `alignment repair {run}`, then `alignment resume {run}`)",
            run,
        )


# ---------------------------------------------------------------------- repair
@dataclass
class Repair:
    """What :func:`repair` did: ``stop`` (every step < stop kept; None: nothing to repair,
    0 with ``moved`` set: the static part was damaged and the record moved aside), ``removed``
    (entries deleted), ``problems`` (what :func:`verify` found), ``last_step`` (the last step
    the repaired record holds)."""

    run_dir: Path
    problems: list[str]
    stop: int | None = None
    removed: list[Path] = field(default_factory=list)
    moved: Path | None = None
    last_step: int | None = None


def _intact_prefix(store: SegmentStore, kind: str) -> tuple[list[Entry], bool]:
    """The entries of the log before its first damaged or missing one, and whether the log
    lost anything (a damaged or missing entry, or a missing end)."""
    live = store.live_entries(kind)
    expected = live[0].seq if live and live[0].kind == "compact" else 0
    for i, entry in enumerate(live):
        if entry.seq != expected or _entry_problems(store, kind, entry):
            return live[:i], True
        expected = entry.seq + 1
    head = _head(store, kind)  # garbled or missing: the checkpoint, if any, tells what was lost
    return live, head is not None and head["last"] >= expected


def _replay_last_step(store: SegmentStore, kind: str, entries: list[Entry]) -> int | None:
    dim = KINDS[kind]
    steps: np.ndarray = np.array([], dtype=np.int64)
    for entry in entries:
        if entry.kind == "truncate":
            steps = steps[steps < store.truncate_stop(entry.path)]
            continue
        values = np.asarray(read_zarr(entry.path, lazy=True)[dim].values, dtype=np.int64)
        steps = values if entry.kind == "compact" else np.concatenate([steps, values])
    return int(steps.max()) if steps.size else None


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    os.rename(path, target)
    return target


def repair(run_dir: str | os.PathLike) -> Repair:
    """Truncate a damaged record to its intact part: every step before the first one a damaged
    or missing segment may have held, in the main and the raw log alike (so the record is the
    complete record of the run's first ``stop`` steps), compacted. Segments after a damaged one
    are dropped too: what they hold follows a gap. A damaged static part (probe, attrs) leaves
    nothing to keep: ``record.zarr`` is then moved aside to ``record.zarr.damaged-<time>``.

    Run it with no writer on the run. Crash-safe: an interrupted repair leaves a record that
    :func:`verify` still reports as damaged, and repairing again finishes the job.
    """
    store = SegmentStore(run_dir)
    report = verify(run_dir)
    result = Repair(report.run_dir, report.problems)
    if report.ok:
        result.last_step = held_last_step(store)
        return result
    if not store.root.is_dir():
        result.stop = 0
        return result
    if _static_damaged(store, report):
        result.stop = 0
        result.moved = _move_aside(store.root)
        return result
    store.clean()
    stops, prefixes = [], {}
    for kind in KINDS:
        kept, lost = _intact_prefix(store, kind)
        prefixes[kind] = kept
        if lost:
            last = _replay_last_step(store, kind, kept)
            stops.append(0 if last is None else last + 1)
    result.stop = min(stops) if stops else None  # None: only a log's metadata was damaged
    for kind, kept in prefixes.items():
        if not (store.root / kind / "zarr.json").exists():
            store.create()  # an empty log in place of a deleted one (keeps what exists)
        store._set_head(kind, kept[-1].seq if kept else -1)  # first: a crash leaves it damaged
        for entry in store.entries(kind):
            if entry not in kept:
                _remove(entry.path)
                result.removed.append(entry.path)
    for kind in KINDS:
        last = store.last_step(kind)
        if result.stop is not None and last is not None and last >= result.stop:
            store.truncate(kind, result.stop)
        store.compact(kind)
    result.last_step = held_last_step(store)
    return result


def _static_damaged(store: SegmentStore, report: Report) -> bool:
    """Whether a problem lies outside the logs (the static part or the root metadata)."""
    logs = [f"{store.root / kind}{os.sep}" for kind in KINDS]
    return any(not any(p.startswith(log) for log in logs) for p in report.problems)


# ---------------------------------------------------------------------- many runs
def open_each(
    paths: Iterable[Path],
    open_one: Callable[[Path], T],
    on_damaged: Literal["raise", "skip"] = "raise",
) -> tuple[list[T], list[Path]]:
    """``open_one`` of every path, and the paths opened.

    ``on_damaged="raise"``: the first damaged run raises (its error names the file). ``"skip"``:
    every run is verified first (:func:`verify`: reads every file once, so that what opens
    later computes without a checksum error), and a damaged one, or one without a record, is
    left out with a :class:`DamagedRunWarning` naming it and its first problem.
    """
    paths = list(paths)
    if on_damaged not in ("raise", "skip"):
        raise ValueError(f"on_damaged must be 'raise' or 'skip', got {on_damaged!r}")
    opened, kept = [], []
    for path in paths:
        if on_damaged == "skip":
            report = verify(path)
            if not report.ok:
                more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
                warnings.warn(
                    f"skipping the damaged run {path}: {report.problems[0]}{more}; {hint(path)}",
                    DamagedRunWarning,
                    stacklevel=3,
                )
                continue
        opened.append(open_one(path))
        kept.append(path)
    if not opened:
        raise ValueError(f"every run is damaged: {', '.join(map(str, paths))}")
    return opened, kept


__all__ = [
    "RECORD",
    "DamagedRecordError",
    "DamagedRunWarning",
    "Repair",
    "Report",
    "check_checkpoint",
    "check_resumable",
    "open_each",
    "repair",
    "verify",
]
