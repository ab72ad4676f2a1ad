"""One writer per run folder: an exclusive kernel lock on ``<run_dir>/.lock``.

``alignment train``, ``alignment resume`` and a sweep's worker all hold this lock for the whole
run, so a second process started on the same folder stops at once instead of writing into the
same record. The lock is a ``flock``: the kernel releases it when its holder dies, so a lock
left by a killed process never blocks. While held, the lock file describes its holder (pid,
host, command line, start time), which the refusal message quotes.

Re-entrant within a thread: ``flock`` locks belong to an open file description, so a second
``open`` + ``flock`` by the process that holds the lock would refuse itself; a per-process
registry lets the holder (e.g. a sweep worker that locked the folder and then calls
:func:`~alignment.training.trainer.train_run`) take it again. Another thread of the same
process is refused, as another process would be.

Under ``torchrun`` only rank 0 takes the lock (:func:`hold_run` with a ``world``); the outcome
is broadcast so that every rank stops together. On a file system without ``flock`` the run goes
ahead unlocked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"
LOCK_WAIT_S = 1.0
"""How long a lock held by someone else is retried: ``sweep-status`` probes the lock for an
instant, which must not refuse a run that starts at that moment."""


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock; the message names the folder and the holder."""


class _Broadcaster(Protocol):  # alignment.training.distributed.World
    @property
    def is_main(self) -> bool: ...

    def broadcast(self, obj: object) -> object: ...


@dataclass
class _Held:
    fd: int
    thread: int
    count: int


_registry: dict[str, _Held] = {}
_registry_lock = threading.Lock()


def _drop_in_forked_child() -> None:
    """A forked child (a DataLoader worker, a fork-started pool process) closes its copies of the
    lock descriptors: the lock is released only when every copy is closed, so a child that
    outlives its parent's run, or a parent killed by SIGKILL, would otherwise keep the run
    locked. The parent's copies, and so its lock, are untouched. (The child has one thread, so
    the registry is read without its lock, which another thread may have held at the fork.)"""
    for held in list(_registry.values()):
        with contextlib.suppress(OSError):
            os.close(held.fd)
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_forked_child)


def _key(run_dir: Path) -> str:
    return os.path.realpath(run_dir)


def _command() -> str:
    """This process's command line (``python -m alignment …`` as typed)."""
    first, *rest = sys.argv or [""]
    if Path(first).parts[-2:] == ("alignment", "__main__.py"):
        return " ".join(["alignment", *rest])
    return " ".join([Path(sys.executable).name, first, *rest]).strip()


def _describe_self() -> str:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def holder(run_dir: Path) -> str:
    """Who holds ``run_dir``'s lock, as written in the lock file (``"an unknown process"`` if it
    has not written itself yet)."""
    try:
        info = json.loads((Path(run_dir) / LOCK).read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']}: `{info['command']}`"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


def _try_lock(fd: int, wait_s: float) -> bool:
    """Take the exclusive lock on ``fd``, retrying for ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        except OSError:  # no locks on this file system: go ahead unlocked
            return True


@contextlib.contextmanager
def run_lock(run_dir: Path, wait_s: float | None = None) -> Iterator[bool]:
    """Hold the exclusive lock on ``run_dir/.lock`` (creating ``run_dir``); yields False if
    another process (or another thread) holds it for ``wait_s`` seconds (default
    :data:`LOCK_WAIT_S`). Re-entrant in the thread that holds it."""
    run_dir = Path(run_dir)
    key = _key(run_dir)
    with _registry_lock:
        held = _registry.get(key)
        if held is not None and held.thread == threading.get_ident():
            held.count += 1
        else:
            held = None
    if held is not None:
        try:
            yield True
        finally:
            with _registry_lock:
                held.count -= 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield True
        return
    fd, writable = _open(run_dir / LOCK)
    try:
        if not _try_lock(fd, LOCK_WAIT_S if wait_s is None else wait_s):
            yield False
            return
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _describe_self().encode(), 0)
        with _registry_lock:
            _registry[key] = _Held(fd, threading.get_ident(), 1)
        try:
            yield True
        finally:
            with _registry_lock:
                _registry.pop(key, None)
            if writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # no holder any more
    finally:
        os.close(fd)  # releases the lock


def _open(path: Path) -> tuple[int, bool]:
    """A descriptor of the lock file and whether it is writable: in a folder this process may
    not write to (a finished run on a read-only share) an existing lock file is locked read-only,
    so that reading the run still works; writing into it fails later with its own error."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644), True
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not path.exists():
            raise
        try:
            return os.open(path, os.O_RDONLY), False
        except OSError:
            raise error from None


def holds(run_dir: Path) -> bool:
    """Whether this thread holds ``run_dir``'s lock."""
    with _registry_lock:
        held = _registry.get(_key(Path(run_dir)))
    return held is not None and held.thread == threading.get_ident()


@contextlib.contextmanager
def hold_run(
    run_dir: Path, world: _Broadcaster | None = None, wait_s: float | None = None
) -> Iterator[None]:
    """Hold ``run_dir``'s lock or raise :class:`RunLockedError` naming the folder and the holder.

    With a distributed ``world`` only rank 0 locks; every rank learns the outcome, so that all
    raise together when the folder is taken.
    """
    with contextlib.ExitStack() as stack:
        refusal, failure = None, None
        if world is None or world.is_main:
            try:
                if not stack.enter_context(run_lock(run_dir, wait_s)):
                    refusal = (
                        f"{run_dir} is in use by another process ({holder(run_dir)}); two "
                        "writers would corrupt the run: wait for it to finish or stop it, or "
                        "train into another --out"
                    )
            except Exception as error:  # e.g. a read-only folder: every rank must stop
                if world is None:
                    raise
                failure = error
        if world is not None:
            shared = world.broadcast((refusal, None if failure is None else str(failure)))
            if failure is not None:
                raise failure
            refusal, failed = shared
            if failed is not None:
                raise RuntimeError(f"rank 0 could not lock {run_dir}: {failed}")
        if refusal is not None:
            raise RunLockedError(refusal)
        yield


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds ``run_dir``'s lock, i.e. is training the run right now."""
    path = Path(run_dir) / LOCK
    if fcntl is None or not path.exists():
        return False
    if holds(run_dir):
        return True
    with open(path, "rb") as handle:  # read-only: works in a read-only folder too
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
    return False
