"""The calibration of the demo's schedule: candidate settings × rules × seeds on MNIST-5k.

Each run trains a demo config (``alignment/configs/demo/<rule>.yaml``) with a candidate's
overrides, in-process through :func:`alignment.training.train`, with a light record (no Jacobians,
one record every 10,000 steps: the recorder still records every epoch start and the final weights,
so the final accuracy and alignment are exactly what ``make demo`` would report for the same
settings). Every run lives in its own process at one thread (``--jobs`` of them at once), because
the machine the calibration was made on has 2 shared cores; results are appended to
``OUT/results.jsonl`` (one line per run: candidate, rule, seed, final test accuracy, final path
alignment per layer, wall and CPU seconds), finished runs are skipped, and the table is printed
as the mean ± sd over seeds of each (candidate, rule).

    python benchmarks/demo_calibration.py                          # every candidate (hours)
    python benchmarks/demo_calibration.py --only burst300 --jobs 2 # one candidate
    python benchmarks/demo_calibration.py --table                  # the table of what ran
    python benchmarks/demo_calibration.py --only demo              # the shipped configs as is

The candidates are the ones measured for the README's calibration table ("What the demo shows");
``demo`` is the shipped configs unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> (description, rules, overrides of every rule's config, overrides of PFA/PFA-o only)
PFA_RULES = ("pfa", "pfa_o")
CANDIDATES: dict[str, tuple[str, tuple[str, ...], list[str], list[str]]] = {
    "demo": ("the shipped demo configs", ("bp", "fa", "dfa", "usf", "pfa", "pfa_o"), [], []),
}


def _add(name: str, text: str, rules, common: list[str], pfa: list[str]) -> None:
    CANDIDATES[name] = (text, tuple(rules), common, pfa)


ALL = ("bp", "fa", "dfa", "usf", "pfa", "pfa_o")
# The schedule before this calibration: wd 0.1 for 937 of 1,240 steps, then 3e-4.
OLD_BURST = ["optim.weight_decay=0.1", "wd_schedule.gamma=0.003", "wd_schedule.burst_steps=937"]
_add("old", "before: 20 epochs, wd 0.1 for 937 steps then 3e-4", ALL, ["epochs=20"], OLD_BURST)


def burst(wd: float, steps: int, after: float = 1e-4) -> list[str]:
    """PFA's burst: weight decay ``wd`` for ``steps`` steps, then ``after``."""
    return [
        f"optim.weight_decay={wd:g}",
        f"wd_schedule.gamma={after / wd:.6g}",
        f"wd_schedule.burst_steps={steps}",
    ]


PFA_ONLY = ("bp", "pfa", "pfa_o")
# A short burst near critical damping of momentum SGD (eta*wd ~ (1 - sqrt(0.9))^2 at lr 0.01,
# wd ~ 0.26), then the other rules' 1e-4: c_t from 1e-2 down to 1e-4 in 124-248 steps.
for _wd, _steps in [(0.2, 186), (0.2, 248), (0.25, 186), (0.15, 300), (0.3, 124)]:
    _add(
        f"wd{_wd:g}x{_steps}",
        f"20 epochs, PFA wd {_wd:g} for {_steps} steps then 1e-4",
        PFA_ONLY,
        ["epochs=20"],
        burst(_wd, _steps),
    )
# A higher lr for every rule: c_t depends on eta*wd, so the same burst is wd = 0.002 / lr.
for _lr, _steps in [(0.02, 186), (0.05, 186)]:
    _add(
        f"lr{_lr:g}x{_steps}",
        f"20 epochs, lr {_lr:g}, PFA wd {0.002 / _lr:g} for {_steps} steps then 1e-4",
        ALL,
        ["epochs=20", f"optim.lr={_lr:g}"],
        burst(0.002 / _lr, _steps),
    )
_add(
    "noburst", "20 epochs, no burst (wd 1e-4 throughout)", PFA_RULES, ["epochs=20"], burst(1e-4, 0)
)


def _run_one(args: argparse.Namespace) -> None:
    """Train one (candidate, rule, seed) and append its line to the results file."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from alignment.config import load_config
    from alignment.recording import open_run
    from alignment.training import train

    _, _, common, pfa = CANDIDATES[args.candidate]
    sets = [*common, *(pfa if args.rule in PFA_RULES else [])]
    sets += ["record.jacobian=never", "record.every=10000", f"seeds=[{args.seed}]"]
    config = load_config(f"demo/{args.rule}", sets)
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        (result,) = train(config, Path(tmp), quiet=True)
        ds = open_run(result.run_dir)
        final = ds["feedback_alignment"].dropna("step", how="all").isel(step=-1).values
        ds.close()
    line = {
        "candidate": args.candidate,
        "rule": args.rule,
        "seed": args.seed,
        "sets": sets,
        "steps": result.steps,
        "accuracy": 100 * result.final_accuracy,
        "alignment": [float(a) for a in np.asarray(final, dtype=float)],
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
    }
    with open(args.results, "a") as f:
        f.write(json.dumps(line) + "\n")


def _done(results: Path) -> set[tuple[str, str, int]]:
    if not results.exists():
        return set()
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(d["candidate"], d["rule"], d["seed"]) for d in lines}


def table(results: Path) -> str:
    """Mean ± sd over seeds of accuracy and hidden-layer alignment per (candidate, rule)."""
    import numpy as np

    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str], list[dict]] = {}
    for d in lines:
        groups.setdefault((d["candidate"], d["rule"]), []).append(d)
    rows = ["| candidate | rule | seeds | accuracy % | Δ vs BP | fc1 ° | fc2 ° | fc3 ° | s/run |"]
    rows.append("|---|---|---|---|---|---|---|---|---|")
    for (candidate, rule), runs in groups.items():
        acc = np.array([d["accuracy"] for d in runs])
        align = np.array([d["alignment"] for d in runs])
        bp = groups.get((candidate, "bp"))
        delta = "" if bp is None else f"{acc.mean() - np.mean([d['accuracy'] for d in bp]):+.2f}"
        angles = [f"{m:.1f} ± {s:.1f}" for m, s in zip(align.mean(0), align.std(0), strict=True)]
        seeds = ",".join(str(d["seed"]) for d in sorted(runs, key=lambda d: d["seed"]))
        wall = np.mean([d["wall_s"] for d in runs])
        rows.append(
            f"| {candidate} | {rule} | {seeds} | {acc.mean():.2f} ± {acc.std():.2f} | {delta} | "
            + " | ".join(angles)
            + f" | {wall:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo_calibration"))
    parser.add_argument("--only", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--rules", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--table", action="store_true", help="print the table and stop")
    parser.add_argument("--one", nargs=3, metavar=("CANDIDATE", "RULE", "SEED"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.results = args.out / "results.jsonl"
    if args.one:
        args.candidate, args.rule, args.seed = args.one[0], args.one[1], int(args.one[2])
        _run_one(args)
        return 0
    if not args.table:
        done = _done(args.results)
        todo = [
            (name, rule, seed)
            for name in args.only
            for rule in CANDIDATES[name][1]
            if args.rules is None or rule in args.rules
            for seed in args.seeds
            if (name, rule, seed) not in done
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        running: list[subprocess.Popen] = []
        script = [sys.executable, __file__, "--out", str(args.out)]
        for name, rule, seed in todo:
            while len(running) >= args.jobs:
                running = [p for p in running if p.poll() is None]
                if len(running) >= args.jobs:
                    time.sleep(0.5)
            print(f"start {name} {rule} seed{seed}", flush=True)
            running.append(subprocess.Popen([*script, "--one", name, rule, str(seed)], env=env))
        for p in running:
            p.wait()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"children CPU time: {usage.ru_utime + usage.ru_stime:.0f} s")
    print(table(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
