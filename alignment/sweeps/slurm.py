"""``--executor slurm``: the runs of a sweep as one Slurm array job, through submitit.

Each array task trains one run (:class:`SlurmTask`, resuming it if it was interrupted). A task
that reaches its time limit or is preempted is requeued by submitit (up to ``max_requeues``
times) and resumes from the run's last checkpoint.

Logs: submitit writes an array's files (sbatch script, pickles, ``%A_%a_0_log.out/.err``) into
one folder, ``<out>/.submitit``; each run folder gets ``slurm/<job id>_log.out`` and ``.err``,
symbolic links to its task's logs, and ``<out>/.submitit/jobs.jsonl`` maps job IDs to runs.

``cluster`` selects submitit's executor: ``slurm`` (the default), or ``local`` / ``debug``, which
run the same code path on this machine (subprocesses, or in this process) without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alignment.config import Config
from alignment.extras import needs_extra
from alignment.sweeps.expand import Run
from alignment.sweeps.resources import SlurmResources, generic_parameters, sbatch_parameters
from alignment.sweeps.worker import Outcome, train_one

with needs_extra("cluster", "the Slurm executor"):
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError
    from submitit.slurm.slurm import SlurmExecutor

SUBMITIT_DIR = ".submitit"
CLUSTERS = ("slurm", "local", "debug")


class SlurmTask(submitit.helpers.Checkpointable):
    """One array task: train one run with ``$SLURM_CPUS_PER_TASK`` torch threads. Being
    ``Checkpointable``, it is requeued with the same arguments on timeout or preemption, and
    :func:`~alignment.sweeps.worker.train_one` resumes the run from its checkpoint.

    With ``tasks_per_node > 1`` the job's tasks are the ranks of one data-parallel run: each
    exports the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, …) that
    :mod:`alignment.training.distributed` reads, then trains its share."""

    def __call__(
        self, config: Config, run_dir: str, seed: int, device: str | None = None
    ) -> Outcome:
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK") or 0) or None
        if _tasks() == 1:
            return train_one(config, run_dir, seed, device=device, threads=threads)
        from alignment.training.distributed import shutdown

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            return train_one(
                config, run_dir, seed, device=device, threads=threads, distributed=True
            )
        finally:
            shutdown()


def _tasks() -> int:
    """How many tasks the job running this has (1 outside a submitit job)."""
    try:
        return submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job (a pickled task run by hand)
        return 1


class _ScriptOnlySlurmExecutor(SlurmExecutor):
    """A SlurmExecutor usable without Slurm, only to write the sbatch script (dry run)."""

    @classmethod
    def affinity(cls) -> int:
        return 2


def _slurm_executor(
    folder: Path, resources: SlurmResources, job_name: str, *, script_only: bool = False
) -> SlurmExecutor:
    cls = _ScriptOnlySlurmExecutor if script_only else SlurmExecutor
    if not script_only and shutil.which("sbatch") is None:
        raise ValueError(
            "--executor slurm needs Slurm's sbatch and srun, which are not on this machine's "
            "PATH: run it on the cluster's login node (--dry-run prints the sbatch script; "
            "--submitit-cluster local runs the Slurm code path here)"
        )
    executor = cls(folder=folder, max_num_timeout=resources.max_requeues)
    executor.update_parameters(**sbatch_parameters(resources, job_name))
    return executor


def sbatch_script(out: Path, resources: SlurmResources, job_name: str, count: int) -> str:
    """The sbatch script an array of ``count`` runs would be submitted with (nothing is
    written or submitted)."""
    executor = _slurm_executor(
        Path(out).absolute() / SUBMITIT_DIR, resources, job_name, script_only=True
    )
    if count > 1:
        executor.parameters["map_count"] = count  # what SlurmExecutor sets for an array
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


def make_executor(
    folder: Path, resources: SlurmResources, job_name: str, cluster: str = "slurm"
) -> submitit.Executor:
    """submitit's executor for ``cluster`` (see the module docstring) with ``resources``."""
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    if cluster == "slurm":
        return _slurm_executor(folder, resources, job_name)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**generic_parameters(resources, job_name))
    return executor


def _link(link: Path, target: Path) -> None:
    link.unlink(missing_ok=True)
    try:
        link.symlink_to(os.path.relpath(target, link.parent))
    except OSError:  # no symbolic links here: say where the log is
        link.with_name(link.name + ".path").write_text(f"{target}\n")


def _record(folder: Path, runs: list[Run], jobs: list[submitit.Job[Any]]) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with open(folder / "jobs.jsonl", "a") as handle:
        for run, job in zip(runs, jobs, strict=True):
            slurm_dir = run.run_dir / "slurm"
            slurm_dir.mkdir(parents=True, exist_ok=True)
            _link(slurm_dir / f"{job.job_id}_log.out", job.paths.stdout)
            _link(slurm_dir / f"{job.job_id}_log.err", job.paths.stderr)
            line = {"job_id": job.job_id, "run_id": run.run_id, "submitted": now}
            handle.write(json.dumps(line) + "\n")


def submit(
    runs: list[Run],
    out: Path,
    resources: SlurmResources,
    *,
    job_name: str,
    cluster: str = "slurm",
    device: str | None = None,
) -> list[submitit.Job[Outcome]]:
    """Submit ``runs`` as one array job (a single job if there is one run); returns the jobs,
    in the order of ``runs``. With ``cluster='local'`` or ``'debug'`` wait for them with
    :func:`wait`."""
    folder = Path(out).absolute() / SUBMITIT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    executor = make_executor(folder, resources, job_name, cluster)
    try:
        jobs = executor.map_array(
            SlurmTask(),
            [run.config for run in runs],
            [str(run.run_dir.absolute()) for run in runs],
            [run.seed for run in runs],
            [device] * len(runs),
        )
    except (FailedSubmissionError, FailedJobError) as error:
        raise ValueError(f"sbatch failed: {error}") from None
    _record(folder, runs, jobs)
    return jobs


def wait(jobs: list[submitit.Job[Outcome]]) -> list[Outcome | BaseException]:
    """Each job's outcome or exception (blocks until all are finished). submitit's debug
    executor runs the jobs here, and opens ``pdb`` on the first that fails."""
    results: list[Outcome | BaseException] = []
    with _closing_removed_handlers():
        for job in jobs:
            try:
                results.append(job.results()[0])  # a data-parallel run: rank 0's
            except Exception as error:
                results.append(error)
    return results


@contextlib.contextmanager
def _closing_removed_handlers() -> Iterator[None]:
    """Close the log handlers removed from the root logger meanwhile: a debug job adds file
    handlers for its logs and removes them without closing the files."""
    root = logging.getLogger()

    def remove(handler: logging.Handler) -> None:
        logging.Logger.removeHandler(root, handler)
        handler.close()

    root.removeHandler = remove  # type: ignore[method-assign]
    try:
        yield
    finally:
        del root.removeHandler
