"""Slurm resources of a sweep: the spec's ``slurm:`` section, overridable on the command line.

.. code-block:: yaml

    slurm:
      partition: gpu            # sbatch --partition
      time: "12:00:00"          # per run: minutes (720) or [D-]HH:MM:SS, as sbatch takes it
      gpus_per_node: 1          # --gpus-per-node (0: none requested)
      tasks_per_node: 1         # --ntasks-per-node: > 1 trains each run data-parallel, one
                                # torchrun-style rank per task (usually = gpus_per_node)
      cpus_per_task: 4          # --cpus-per-task; also the torch threads of the run
      mem_gb: 16                # --mem=16GB
      array_parallelism: 30     # --array=0-N%30: at most 30 runs at once
      account: my_lab           # optional: --account, --qos, --constraint
      setup: ["module load cuda"]            # shell lines before the run
      additional_parameters: {mail-type: END}  # any other #SBATCH flag
      max_requeues: 3           # a run that hits the time limit is requeued (resuming from its
                                # checkpoint) up to this many times
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.config import ConfigError


@dataclass(frozen=True)
class SlurmResources:
    """What each array task of a sweep asks Slurm for (one task trains one run)."""

    partition: str | None = None
    time: int = 60
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 32
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    max_requeues: int = 3
    job_name: str | None = None


RESOURCE_KEYS = tuple(f.name for f in dataclasses.fields(SlurmResources))
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<parts>\d+(?::\d+){0,2})$")


def parse_time(value: Any, where: str = "time") -> int:
    """Minutes from an int (minutes) or a Slurm time string: ``MM``, ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS`` (seconds round up to the next minute)."""
    if isinstance(value, int) and not isinstance(value, bool):
        minutes = value
    elif isinstance(value, str) and (match := _TIME.match(value.strip())):
        parts = [int(p) for p in match["parts"].split(":")]
        days = int(match["days"] or 0)
        if match["days"] is not None:  # D-HH[:MM[:SS]]
            parts += [0] * (3 - len(parts))
            seconds = ((days * 24 + parts[0]) * 60 + parts[1]) * 60 + parts[2]
        elif len(parts) == 3:
            seconds = (parts[0] * 60 + parts[1]) * 60 + parts[2]
        elif len(parts) == 2:
            seconds = parts[0] * 60 + parts[1]
        else:
            seconds = parts[0] * 60
        minutes = math.ceil(seconds / 60)
    else:
        raise ConfigError(
            f"{where} must be minutes (e.g. 90) or a Slurm time such as '02:00:00' or "
            f"'1-12:00:00', got {value!r}"
        )
    if minutes < 1:
        raise ConfigError(f"{where} must be at least one minute, got {value!r}")
    return minutes


def _check(key: str, value: Any, source: Path | str) -> Any:
    where = f"{source}: slurm.{key}"
    if key in ("partition", "account", "qos", "constraint", "job_name"):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
        return value
    if key == "time":
        return parse_time(value, where)
    if key == "mem_gb":
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{where} must be a positive number of GB, got {value!r}")
        return value
    if key == "setup":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of shell lines, got {value!r}")
        return tuple(value)
    if key == "additional_parameters":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where} must map sbatch flags to values, got {value!r}")
        return dict(value)
    least = {
        "gpus_per_node": 0,
        "tasks_per_node": 1,
        "max_requeues": 0,
        "cpus_per_task": 1,
        "array_parallelism": 1,
    }
    if not isinstance(value, int) or isinstance(value, bool) or value < least[key]:
        raise ConfigError(f"{where} must be an integer ≥ {least[key]}, got {value!r}")
    return value


def resources_from_dict(data: dict[str, Any], source: Path | str) -> SlurmResources:
    """Validated resources from a spec's ``slurm:`` mapping."""
    unknown = [key for key in data if key not in RESOURCE_KEYS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key slurm.{unknown[0]}; allowed keys under slurm: "
            f"{', '.join(RESOURCE_KEYS)}"
        )
    return SlurmResources(**{key: _check(key, value, source) for key, value in data.items()})


def with_overrides(resources: SlurmResources, **overrides: Any) -> SlurmResources:
    """``resources`` with the command line's values (``None``: keep the spec's) checked and set."""
    changes = {k: _check(k, v, "command line") for k, v in overrides.items() if v is not None}
    return dataclasses.replace(resources, **changes)


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{math.ceil(mem_gb * 1024)}MB"


def sbatch_parameters(resources: SlurmResources, job_name: str) -> dict[str, Any]:
    """The parameters of submitit's ``SlurmExecutor`` (its sbatch names) for ``resources``."""
    r = resources
    params: dict[str, Any] = {
        "job_name": r.job_name or job_name,
        "time": r.time,
        "cpus_per_task": r.cpus_per_task,
        "array_parallelism": r.array_parallelism,
        "partition": r.partition,
        "gpus_per_node": r.gpus_per_node or None,
        "ntasks_per_node": r.tasks_per_node if r.tasks_per_node > 1 else None,
        "mem": _mem(r.mem_gb) if r.mem_gb else None,
        "account": r.account,
        "qos": r.qos,
        "constraint": r.constraint,
        "setup": list(r.setup) or None,
        "additional_parameters": dict(r.additional_parameters) or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def generic_parameters(resources: SlurmResources, job_name: str) -> dict[str, Any]:
    """The cluster-independent parameters of submitit's ``AutoExecutor`` (for its ``local`` and
    ``debug`` executors, which run the Slurm code path on this machine)."""
    r = resources
    params: dict[str, Any] = {
        "name": r.job_name or job_name,
        "timeout_min": r.time,
        "cpus_per_task": r.cpus_per_task,
        "gpus_per_node": r.gpus_per_node or None,
        "tasks_per_node": r.tasks_per_node if r.tasks_per_node > 1 else None,
        "mem_gb": r.mem_gb,
    }
    return {k: v for k, v in params.items() if v is not None}
