"""``alignment sweep`` and ``alignment sweep-status``: a sweep spec's runs, trained or reported.

* ``alignment sweep SPEC [--executor local|slurm] [--jobs N] [--dry-run] [--out DIR]
  [--set KEY=VALUE] [--partition P] [--time T] [--gpus N] [--tasks N] [--cpus N]
  [--mem-gb G]`` trains the runs that are not done (interrupted ones resume) into
  ``OUT/<run id>`` (default ``out/sweeps/<spec name>``): ``local`` (the default) with
  ``--jobs`` worker processes, ``slurm`` as one submitit array job with at most ``--jobs`` tasks
  at once (default: the spec's ``slurm.array_parallelism``); ``--tasks N`` makes each run
  data-parallel over N tasks. ``--dry-run`` lists what would happen (and prints the sbatch
  script for slurm) without training or submitting.
* ``alignment sweep-status SPEC [--out DIR]``: one line per run (done, running, failed,
  interrupted, pending) with its accuracy, progress or error.

SPEC is a YAML file or a bundled spec name (mnist, cifar10, sparse, imagenet); the format is
described in :mod:`alignment.sweeps.spec`.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

EXECUTORS = ("local", "slurm")
SPEC_EXAMPLE = """\
a sweep spec (format: alignment.sweeps.spec):
  # PFA's k x feedback density on the MNIST-5k demo
  name: pfa_k_density
  config: demo/pfa                 # a config file or a bundled config name
  set: {epochs: 5}                 # overrides for every run
  axes:                            # every combination; or an axis config: [a, b, ...]
    rule.k: [1, 2, 5, 10]
    rule.density: [1, 0.5]
    seed: [0, 1, 2]
  slurm: {partition: gpu, time: "02:00:00", gpus_per_node: 1, cpus_per_task: 4, mem_gb: 16}
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", help="sweep spec: a YAML file or a bundled name (mnist, cifar10, sparse, imagenet)"
    )
    parser.add_argument("--out", help="output folder (default: the spec's, or out/sweeps/NAME)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of every run, e.g. --set data.root=/data (repeatable); changes "
        "the run IDs unless the field is name, device or a data location",
    )


def add_commands(subparsers: Any) -> None:
    """Register ``sweep`` and ``sweep-status`` on the ``alignment`` command's subparsers."""
    sweep = subparsers.add_parser(
        "sweep",
        help="train a sweep spec's runs (skips finished, resumes interrupted)",
        description="Train the runs of a sweep spec that are not done into OUT/<run id>: "
        "finished runs are skipped, interrupted ones resumed, failed ones retried.",
        epilog=SPEC_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(sweep)
    sweep.add_argument("--executor", choices=EXECUTORS, default="local", help="default: local")
    sweep.add_argument(
        "--jobs",
        type=_positive,
        help="local: worker processes (default 1); slurm: array tasks at once (default: spec's)",
    )
    sweep.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs (and the sbatch script); train nothing",
    )
    sweep.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the config's")
    slurm = sweep.add_argument_group("slurm resources (override the spec's slurm section)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", help="per run: minutes or [D-]HH:MM:SS")
    slurm.add_argument("--gpus", type=int, help="GPUs per node (per run)")
    slurm.add_argument(
        "--tasks",
        type=int,
        help="tasks per node (per run): > 1 trains each run data-parallel, one rank per task",
    )
    slurm.add_argument("--cpus", type=_positive, help="CPUs per task (per run)")
    slurm.add_argument("--mem-gb", type=float, help="memory per run in GB")
    slurm.add_argument(
        "--submitit-cluster",
        choices=["slurm", "local", "debug"],
        default="slurm",
        help="run the slurm path with submitit's local (subprocesses) or debug (this process) "
        "executor instead of Slurm, e.g. to try a spec (default: slurm)",
    )
    sweep.set_defaults(func=_sweep_command)

    status = subparsers.add_parser("sweep-status", help="status of each run of a sweep spec")
    _common(status)
    status.set_defaults(func=_status_command)


def _load(args: argparse.Namespace) -> tuple[Any, Path, list[Any]]:
    from alignment.sweeps import expand, load_spec

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else spec.default_out()
    return spec, out, expand(spec, out, args.set)


def _status_command(args: argparse.Namespace) -> int:
    from alignment.sweeps.status import other_run_dirs, run_states, summary, table

    spec, out, runs = _load(args)
    states = run_states(runs)
    print(f"sweep {spec.name} ({spec.source}) in {out}")
    print(table(states))
    print(summary(states))
    others = other_run_dirs(out, runs)
    if others:
        print(f"{len(others)} other run folder(s) in {out} are not runs of this spec as it is now")
    return 0


def _action(state: Any) -> str:
    from alignment.sweeps.status import Status
    from alignment.training.checkpoint import CHECKPOINT

    if state.status == Status.DONE:
        return "skip (done)"
    if state.status == Status.RUNNING:
        return "skip (running)"
    if (state.run.run_dir / CHECKPOINT).exists():
        return "resume"
    return "start"


def _resources(spec: Any, args: argparse.Namespace) -> Any:
    from alignment.sweeps.resources import resources_from_dict, with_overrides

    return with_overrides(
        resources_from_dict(spec.slurm, spec.source),
        partition=args.partition,
        time=args.time,
        gpus_per_node=args.gpus,
        tasks_per_node=args.tasks,
        cpus_per_task=args.cpus,
        mem_gb=args.mem_gb,
        array_parallelism=args.jobs,
    )


def _sweep_command(args: argparse.Namespace) -> int:
    from alignment.sweeps.status import run_states, summary, todo

    spec, out, runs = _load(args)
    states = run_states(runs)
    pending = [state.run for state in todo(states)]
    print(f"sweep {spec.name}: {summary(states)}; output in {out}", flush=True)
    resources = _resources(spec, args) if args.executor == "slurm" else None
    if args.dry_run:
        width = max(len(s.run.run_id) for s in states)
        for state in states:
            print(f"  {state.run.run_id:<{width}}  {_action(state)}")
        if resources is not None and pending:
            from alignment.sweeps.slurm import sbatch_script

            print(f"\n# sbatch script for {len(pending)} run(s) (not submitted):")
            print(sbatch_script(out, resources, f"alignment-{spec.name}", len(pending)))
        return 0
    if not pending:
        print("nothing to do: every run is done or running")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(spec.source.read_text())
    if args.executor == "local":
        return _run_local(pending, runs, args)
    return _run_slurm(pending, runs, out, resources, spec.name, args)


def _run_local(pending: list[Any], runs: list[Any], args: argparse.Namespace) -> int:
    from alignment.sweeps.local import run_local
    from alignment.sweeps.status import run_states, summary

    results = run_local(pending, jobs=args.jobs or 1, device=args.device)
    print(summary(run_states(runs)))
    return 1 if any(isinstance(r, BaseException) for r in results.values()) else 0


def _run_slurm(
    pending: list[Any],
    runs: list[Any],
    out: Path,
    resources: Any,
    name: str,
    args: argparse.Namespace,
) -> int:
    from alignment.sweeps.local import describe
    from alignment.sweeps.slurm import SUBMITIT_DIR, submit, wait
    from alignment.sweeps.status import run_states, summary

    cluster = args.submitit_cluster
    jobs = submit(
        pending, out, resources, job_name=f"alignment-{name}", cluster=cluster, device=args.device
    )
    first = jobs[0].job_id.split("_")[0]
    kind = "array job" if len(jobs) > 1 else "job"
    print(
        f"submitted {kind} {first} ({cluster}) with {len(jobs)} run(s); logs in "
        f"{out / SUBMITIT_DIR}, linked from each run's slurm/ folder"
    )
    if cluster == "slurm":
        print(f"follow it with: alignment sweep-status {shlex.quote(args.spec)}{_flags(args)}")
        return 0
    results = wait(jobs)
    for index, (run, result) in enumerate(zip(pending, results, strict=True), start=1):
        print(describe(index, len(pending), run, result))
    print(summary(run_states(runs)))
    return 1 if any(isinstance(r, BaseException) for r in results) else 0


def _flags(args: argparse.Namespace) -> str:
    flags = f" --out {shlex.quote(args.out)}" if args.out else ""
    return flags + "".join(f" --set {shlex.quote(text)}" for text in args.set)
