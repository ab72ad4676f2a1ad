"""Analysing many runs: peak memory and time of lazy ``open_runs`` against an eager load.

The runs are synthetic records of the paper's MNIST experiment written to disk with the real
storage code (``tests/synthetic.py``: :func:`synthetic_run` values, :func:`write_run` through
``SegmentStore``, compacted as ``Recorder.close`` leaves them): MLP with 3 layers, 40 epochs of
937 steps recorded every 50 steps and at every epoch start (790 records), a probe batch of 16
MNIST-sized inputs, every quantity the recorder writes for the MLP (per-layer alignments, per
sample error-signal and Jacobian alignments, 10 Jacobian singular values, …): about 1.3 MB in
memory per run. Rules BP, FA, DFA, uSF, PFA, PFA-o, seeds 0, 1, … in turn, so that any first N
runs cover every rule; the largest N is generated once and kept under ``--root``.

For each N in ``--runs`` and each mode, a fresh interpreter (so that its peak RSS is clean) opens
the first N runs and computes what ``alignment figures`` needs for Fig. 2 and the accuracy table:

* **eager**: ``open_runs(paths, lazy=False)`` reads every run into memory (numpy), then the same
  analyses as below;
* **lazy**: ``open_runs(paths)`` (dask, one chunk per run and variable, nothing read yet), then
  ``alignment.analyses.accuracy_table(ds).compute()`` (final and best test accuracy, mean ± std
  over seeds) and ``alignment.figures.training.figure_data(ds)`` (the data of Fig. 2's panels:
  test accuracy, alignment and norm ratio per layer and epoch, mean/std/sem/n over seeds), which
  reads only those variables and reduces over seeds run by run.

Before measuring, each interpreter does the same on the first 6 runs (imports, caches), then
takes its RSS as the baseline. Reported: seconds to open, to build the table, to build the
Fig. 2 data, in total; ``open MiB``: RSS growth once the runs are open (eager: the data; lazy:
the Datasets' coordinates, attrs and dask graph); ``peak MiB``: the peak RSS growth over the
whole of it (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, else
``ru_maxrss``), ``MiB/run`` that over N; ``data MiB``: the size of the combined Dataset (the runs
stacked along ``run``, no padding) if it were all in memory.
Probes run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed blocks and peaks
follow live arrays (``--malloc-default`` turns this off). Dask uses its default threaded
scheduler (one thread per CPU).

    python benchmarks/open_runs_memory.py                     # N = 50, 100, 200 (~3 min at first)
    python benchmarks/open_runs_memory.py --runs 200 --repeat 3 --json out.json
    python benchmarks/open_runs_memory.py --root /data/bench  # keep the generated runs there
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from peak_rss import proc_status_kib, reset_peak_rss, ru_maxrss_kib

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RULES = ("bp", "fa", "dfa", "usf", "pfa", "pfa_o")
RUN = {
    "data": "mnist",
    "epochs": 40,
    "steps_per_epoch": 937,
    "every": 50,
    "samples": 16,
    "sv": 10,
    "features": 784,
}
"""Keyword arguments of :func:`tests.synthetic.synthetic_run` for every run."""
MODES = ("eager", "lazy")
MMAP_THRESHOLD = 65536
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "alignment-open-runs-benchmark"


# ---------------------------------------------------------------------------------------------
# The runs on disk (generated once, cached under --root)


def run_specs(n: int) -> list[tuple[str, int]]:
    """(rule, seed) of the first ``n`` runs: every rule at seed 0, then at seed 1, …"""
    return [(rule, seed) for seed in range(-(-n // len(RULES))) for rule in RULES][:n]


def run_dir(root: Path, rule: str, seed: int) -> Path:
    return root / rule / f"seed{seed}"


def _write_one(job: tuple[str, str, int]) -> str:
    from tests.synthetic import synthetic_run, write_run

    root, rule, seed = Path(job[0]), job[1], job[2]
    target = run_dir(root, rule, seed)
    tmp = root / f".tmp-{rule}-seed{seed}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_run(synthetic_run(rule, seed, **RUN), tmp)  # type: ignore[arg-type]
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, target)  # a run is there whole or not at all
    return str(target)


def generate(root: Path, n: int, jobs: int) -> list[Path]:
    """The first ``n`` runs under ``root``, writing those not there yet (``jobs`` processes)."""
    root.mkdir(parents=True, exist_ok=True)
    spec = root / "spec.json"
    wanted = json.dumps({"rules": RULES, **RUN}, sort_keys=True)
    if spec.exists() and spec.read_text() != wanted:
        raise SystemExit(f"{root} holds runs of other settings ({spec}); remove it or pick --root")
    spec.write_text(wanted)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    specs = run_specs(n)
    todo = [(str(root), r, s) for r, s in specs if not run_dir(root, r, s).is_dir()]
    if todo:
        print(f"writing {len(todo)} of {n} runs under {root} ({jobs} processes) …", flush=True)
        started = time.perf_counter()
        if jobs > 1:
            with multiprocessing.get_context("spawn").Pool(jobs) as pool:
                for _ in pool.imap_unordered(_write_one, todo, chunksize=4):
                    pass
        else:
            for job in todo:
                _write_one(job)
        print(f"… done in {time.perf_counter() - started:.0f} s", flush=True)
    return [run_dir(root, r, s) for r, s in specs]


def _disk_mib(paths: Sequence[Path]) -> float:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file()) / 2**20


# ---------------------------------------------------------------------------------------------
# Probe (a fresh interpreter per N and mode)


def probe(root: Path, n: int, mode: str) -> dict[str, object]:
    """Open the first ``n`` runs (``mode``), build the accuracy table and Fig. 2's data."""
    import dask
    import xarray as xr

    from alignment import analyses as an
    from alignment.figures import training
    from alignment.recording import open_runs

    paths = [run_dir(root, r, s) for r, s in run_specs(n)]
    # warm up on the first runs: every module imported and every cache filled before the baseline
    warm = open_runs(paths[: len(RULES)], lazy=mode == "lazy")
    an.accuracy_table(warm).compute()
    training.figure_data(warm)
    del warm
    gc.collect()
    reset = reset_peak_rss()
    baseline = proc_status_kib("VmRSS") if reset else None
    if baseline is None:  # no /proc: ru_maxrss is a lifetime peak, baseline is the peak so far
        baseline = ru_maxrss_kib()
    started = time.perf_counter()
    ds = open_runs(paths, lazy=mode == "lazy")
    opened = time.perf_counter()
    held = proc_status_kib("VmRSS") if reset else None
    table = an.accuracy_table(ds).compute()
    markdown = an.to_markdown(table)
    tabled = time.perf_counter()
    fig2 = training.figure_data(ds)
    done = time.perf_counter()
    peak = proc_status_kib("VmHWM") if reset else None
    if peak is None:
        peak = ru_maxrss_kib()
    lazy = [str(name) for name, v in ds.data_vars.items() if v.chunks is not None]
    if (mode == "lazy") != (len(lazy) == len(ds.data_vars)):
        raise RuntimeError(f"{mode} open_runs gave dask-backed variables {lazy}")
    if any(v.chunks is not None for v in fig2.variables.values()):
        raise RuntimeError("figure_data returned dask-backed variables")
    dense = an.as_combined(ds)  # the grid the analyses regroup the run stack into
    return {
        "runs": n,
        "mode": mode,
        "open_s": opened - started,
        "table_s": tabled - opened,
        "fig2_s": done - tabled,
        "total_s": done - started,
        "peak_mib": (peak - baseline) / 1024,
        "open_mib": float("nan") if held is None else (held - baseline) / 1024,
        "baseline_mib": baseline / 1024,
        "data_mib": ds.nbytes / 2**20,
        "grid": {str(d): int(dense.sizes[d]) for d in json.loads(dense.attrs["run_dims"])},
        "seeds_per_rule": table["seeds"].to_series().astype(int).to_dict(),
        "table": markdown,
        "fig2_mib": fig2.nbytes / 2**20,
        "method": "VmHWM after clear_refs" if reset else "ru_maxrss",
        "dask_workers": dask.config.get("num_workers", None) or os.cpu_count(),
        "xarray": xr.__version__,
    }


def run_probe(root: Path, n: int, mode: str, fixed_mmap: bool) -> dict[str, object]:
    command = [sys.executable, str(Path(__file__).resolve()), "--root", str(root)]
    command += ["--probe", mode, str(n)]
    env = dict(os.environ)
    if fixed_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    process = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if process.returncode != 0:
        raise RuntimeError(f"probe {mode} {n} failed:\n{process.stderr.strip()}")
    for line in reversed(process.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"probe {mode} {n} printed no result:\n{process.stdout}")


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class Row:
    runs: int
    mode: str
    open_s: float
    table_s: float
    fig2_s: float
    total_s: float
    open_mib: float
    peak_mib: float
    data_mib: float


def best(samples: list[dict[str, object]]) -> Row:
    """Fastest repeat's times, largest repeat's peak (the conservative reading of each)."""
    fastest = min(samples, key=lambda s: float(s["total_s"]))  # type: ignore[arg-type]
    return Row(
        runs=int(fastest["runs"]),  # type: ignore[arg-type]
        mode=str(fastest["mode"]),
        open_s=float(fastest["open_s"]),  # type: ignore[arg-type]
        table_s=float(fastest["table_s"]),  # type: ignore[arg-type]
        fig2_s=float(fastest["fig2_s"]),  # type: ignore[arg-type]
        total_s=float(fastest["total_s"]),  # type: ignore[arg-type]
        open_mib=max(float(s["open_mib"]) for s in samples),  # type: ignore[arg-type]
        peak_mib=max(float(s["peak_mib"]) for s in samples),  # type: ignore[arg-type]
        data_mib=float(fastest["data_mib"]),  # type: ignore[arg-type]
    )


def format_table(rows: Sequence[Row]) -> str:
    header = (
        f"{'runs':>5} {'mode':<6} {'open s':>7} {'table s':>8} {'fig2 s':>7} {'total s':>8} "
        f"{'open MiB':>9} {'peak MiB':>9} {'MiB/run':>8} {'data MiB':>9} {'peak/eager':>10}"
    )
    lines = [header, "-" * len(header)]
    eager = {r.runs: r for r in rows if r.mode == "eager"}
    previous = None
    for r in rows:
        if previous is not None and r.runs != previous:
            lines.append("")
        previous = r.runs
        base = eager.get(r.runs)
        ratio = f"{r.peak_mib / base.peak_mib:>10.3f}" if base and base.peak_mib > 0 else "-"
        lines.append(
            f"{r.runs:>5} {r.mode:<6} {r.open_s:>7.2f} {r.table_s:>8.2f} {r.fig2_s:>7.2f} "
            f"{r.total_s:>8.2f} {r.open_mib:>9.1f} {r.peak_mib:>9.1f} {r.peak_mib / r.runs:>8.3f} "
            f"{r.data_mib:>9.1f} {ratio:>10}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, nargs="+", default=[50, 100, 200], help="numbers of runs (50 100 200)"
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help=f"where the runs are kept ({DEFAULT_ROOT})"
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes writing the runs (2)")
    parser.add_argument("--repeat", type=int, default=1, help="probes per N and mode (1)")
    parser.add_argument(
        "--malloc-default", action="store_true", help="no MALLOC_MMAP_THRESHOLD_ in the probes"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--probe", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.runs) or args.repeat < 1 or args.jobs < 1:
        parser.error("--runs, --repeat and --jobs must be ≥ 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        mode, n = args.probe
        print(json.dumps(probe(args.root, int(n), mode)))
        return 0
    runs = sorted(set(args.runs))
    paths = generate(args.root, max(runs), args.jobs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, 1-min load "
        f"{load if load is None else round(load, 2)}; runs of {RUN['epochs']} epochs × "
        f"{RUN['steps_per_epoch']} steps recorded every {RUN['every']} ({_disk_mib(paths):.0f} MiB "
        f"on disk for {len(paths)} runs) under {args.root}",
        flush=True,
    )
    samples: dict[tuple[int, str], list[dict[str, object]]] = {}
    started = time.perf_counter()
    for n in runs:
        for mode in args.modes:
            for _ in range(args.repeat):
                result = run_probe(args.root, n, mode, not args.malloc_default)
                samples.setdefault((n, mode), []).append(result)
                print(
                    f"[{n} runs, {mode}] {float(result['total_s']):.2f} s, "  # type: ignore[arg-type]
                    f"peak {float(result['peak_mib']):.1f} MiB",  # type: ignore[arg-type]
                    flush=True,
                )
    rows = [best(s) for s in samples.values()]
    print(f"\n{format_table(rows)}")
    last = samples[max(samples)][-1]
    print(f"\naccuracy table of {last['runs']} runs ({last['mode']}):\n{last['table']}")
    print(f"(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        payload = {
            "settings": {**RUN, "rules": RULES, "root": str(args.root), "repeat": args.repeat},
            "load_average": load,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "rows": [asdict(r) for r in rows],
            "samples": [s for group in samples.values() for s in group],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
