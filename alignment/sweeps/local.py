"""``--executor local``: the runs of a sweep on this machine, ``jobs`` at a time.

With ``jobs > 1`` each run trains in a worker process (``spawn``) with
``max(1, cores // jobs)`` torch threads; with ``jobs == 1`` the runs train one after the other
in this process. A failing run is reported (and left with ``ERROR``) and the others go on.

Workers die with the sweep: if the ``alignment sweep`` process is killed (even with SIGKILL, which
it cannot clean up after), the kernel kills its workers (``PR_SET_PDEATHSIG`` on Linux; elsewhere
a watchdog thread notices that the parent is gone within a second). A worker killed mid-run
leaves its run interrupted and its lock released, so the next sweep resumes it.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

from alignment.sweeps.expand import Run
from alignment.sweeps.worker import ERROR, Outcome, train_one


def cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCHDOG_S = 1.0


def die_with_parent(parent: int) -> None:
    """Make this process die when its parent (pid ``parent``) does: the kernel's parent-death
    signal on Linux, else a daemon thread that polls the parent pid. A process pool's
    ``initializer``; the pool must start its workers from a thread that lives as long as the
    pool (the signal fires when the creating thread exits)."""
    if sys.platform.startswith("linux") and _parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _parent_death_signal(signum: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCHDOG_S)
    os._exit(1)


def describe(index: int, total: int, run: Run, result: Outcome | BaseException) -> str:
    """One progress line: ``[3/12] trained bp-seed2-1a2b3c4d: final accuracy 0.9812 (41 s)``."""
    head = f"[{index}/{total}]"
    if isinstance(result, BaseException):
        message = f"{type(result).__name__}: {result}".splitlines()[0]
        return f"{head} FAILED {run.run_id}: {message} (traceback in {run.run_dir / ERROR})"
    if result.action == "running":
        return f"{head} skipped {run.run_id}: another process is training it"
    accuracy = f"final accuracy {result.final_accuracy:.4f}"
    return f"{head} {result.action} {run.run_id}: {accuracy} ({result.seconds:.0f} s)"


def run_local(
    runs: list[Run],
    *,
    jobs: int = 1,
    device: str | None = None,
    echo: Callable[[str], object] = print,
) -> dict[str, Outcome | BaseException]:
    """Train ``runs`` (skipping done ones, resuming interrupted ones), ``jobs`` at a time;
    returns each run's :class:`~alignment.sweeps.worker.Outcome` or exception by run ID."""
    if jobs < 1:
        raise ValueError(f"--jobs must be ≥ 1, got {jobs}")
    results: dict[str, Outcome | BaseException] = {}
    jobs = min(jobs, len(runs))
    if jobs <= 1:
        for index, run in enumerate(runs, start=1):
            try:
                result: Outcome | BaseException = train_one(
                    run.config, run.run_dir, run.seed, device=device
                )
            except Exception as error:
                result = error
            results[run.run_id] = result
            echo(describe(index, len(runs), run, result))
        return results
    threads = max(1, cores() // jobs)
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures: dict[Future[Outcome], Run] = {
            pool.submit(
                train_one, run.config, run.run_dir, run.seed, device=device, threads=threads
            ): run
            for run in runs
        }
        for index, future in enumerate(as_completed(futures), start=1):
            run = futures[future]
            error = future.exception()
            results[run.run_id] = error if error is not None else future.result()
            echo(describe(index, len(runs), run, results[run.run_id]))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results
