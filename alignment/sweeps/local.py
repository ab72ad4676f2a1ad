"""``--executor local``: the runs of a sweep on this machine, ``jobs`` at a time.

With ``jobs > 1`` each run trains in a worker process (``spawn``) with
``max(1, cores // jobs)`` torch threads; with ``jobs == 1`` the runs train one after the other
in this process. A failing run is reported (and left with ``ERROR``) and the others go on.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

from alignment.sweeps.expand import Run
from alignment.sweeps.worker import ERROR, Outcome, train_one


def cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover


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
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
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
