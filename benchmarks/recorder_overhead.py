"""Cost of the recorder at ``every(10)`` with the default quantities, against its floor.

Networks (batch 64, random MNIST-shaped data, 10 classes): the MNIST MLP 784-512-512-10
(``alignment.models.mlp``) and a small convnet of a user's own (conv(1→8)+BN+pool,
conv(8→16)+BN+pool, fc 784→64, fc 64→10; not in ``alignment.models``). Rules: bp, fa, dfa, pfa
(k = 10). Probe: the default 16 samples.

For each network, every rule gets a plain and a recorded copy of the same converted model
(SGD lr 0.01, momentum 0.9, weight decay 1e-4), and with ``--baseline TREE`` a third copy recorded
by the recorder of another source tree (e.g. a git worktree of an older commit: the "before"
columns). All copies train side by side in one process on the same batches: every step runs each
copy's training step once, in an order that rotates from step to step, so slow drift of a shared
machine hits all alike. A recorded copy calls ``rec.step(x, y)`` before its training step, with
``schedule=every(10)`` and the default quantities; the probe-schedule records (default: every
epoch end, or steps 0, 30, 95, 300, 949 and every 1000) are left out of the window
(``jacobian_schedule=never``; step 0 carries the one-time setup and is not timed) and timed
separately. Reported per (network, rule):

* step ms: median plain training step;
* overhead: Σ recorded / Σ plain − 1 over the window (target ≤ 30 % on the convnet), and (win)
  the median over windows of 10 steps (one record each) of the same ratio, robust to bursts of
  load on a shared machine;
* record: median ``record_seconds`` of the window's records, in training steps;
* floor: what one main record must compute, in training steps, timed with plain torch on a copy:
  the training batch's forward + backward under the rule (rule gradients, loss) and, for a
  non-BP rule, under BP (the BP shadow pass), plus for PFA the feedback products B·R and BᵀW of
  every layer. floor/10 is the least overhead at every(10);
* probe: what a probe-schedule record computes on top (the probe batch's forward + backward
  under the rule and under BP for delta_alignment; for DFA the probe-mean true Jacobian w.r.t.
  each DFA layer's input, C vector-Jacobian products over the probe in one vmapped backward),
  in training steps;
* jacobian: the measured extra cost of a probe-schedule record (probe quantities and Jacobians),
  in training steps (amortised over the default schedule: about that × 15 / 10⁴ steps).

    python benchmarks/recorder_overhead.py                    # both nets, ~5 min on 1 core
    python benchmarks/recorder_overhead.py --quick            # smoke run
    python benchmarks/recorder_overhead.py --nets conv --steps 400 --json out.json
    python benchmarks/recorder_overhead.py --nets conv --exclude delta_alignment
    python benchmarks/recorder_overhead.py --baseline ../alignment-old    # before / after
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacrev

import alignment
from alignment.recording import schedules
from alignment.recording.recorder import DEFAULT_PROBE_SIZE
from alignment.rules import DFA, PFA
from alignment.rules.base import masked

TARGET = 0.30
EVERY = 10
BATCH = 64
PROBE = DEFAULT_PROBE_SIZE
RULES = ("bp", "fa", "dfa", "pfa")


def convnet() -> nn.Module:
    """The issue's own-loop convnet: conv(1→8)+BN+pool, conv(8→16)+BN+pool, fc 784→64, 64→10."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(784, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


NETS = {"mlp": alignment.models.mlp, "conv": convnet}


def build(net: str, rule: str) -> nn.Module:
    torch.manual_seed(0)
    return alignment.convert(NETS[net](), rule, **({"k": 10} if rule == "pfa" else {}))


class Package:
    """The ``alignment`` package of another source tree (``--baseline``), loaded beside this one:
    its modules live in their own table, swapped into ``sys.modules`` while it runs (so the
    imports its functions make at run time find its own modules)."""

    def __init__(self, root: Path) -> None:
        ours = _take_modules()
        sys.path.insert(0, str(root))
        try:
            importlib.import_module("alignment")
            importlib.import_module("alignment.recording")
            self.modules = _take_modules()
        finally:
            sys.path.remove(str(root))
            sys.modules.update(ours)
        self.alignment = self.modules["alignment"]
        self.root = root

    @contextlib.contextmanager
    def active(self):
        ours = _take_modules()
        sys.modules.update(self.modules)
        try:
            yield self.alignment
        finally:
            _take_modules()
            sys.modules.update(ours)


def _take_modules() -> dict:
    """Remove and return every ``alignment`` module from ``sys.modules``."""
    names = [n for n in sys.modules if n == "alignment" or n.startswith("alignment.")]
    return {n: sys.modules.pop(n) for n in names}


PROBE_PARTS = ("probe passes", "DFA mean input Jacobians")
"""Floor parts that a record of the probe schedule computes (not a main record)."""


@dataclass
class Result:
    net: str
    rule: str
    steps: int
    records: int
    step_ms: float
    overhead: float
    record_steps: float
    floor_steps: float
    probe_floor_steps: float
    jacobian_steps: float
    floor_parts_ms: dict
    window_overhead: float = float("nan")
    baseline_overhead: float | None = None
    baseline_record_steps: float | None = None
    baseline_window_overhead: float | None = None


def _batches(count: int, size: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(count)
    ]


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _median_time(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fwd_bwd(model: nn.Module, x: Tensor, y: Tensor) -> None:
    weights = [p for p in model.parameters() if p.requires_grad]
    torch.autograd.grad(F.cross_entropy(model(x), y), weights)


def floor(net: str, rule: str, batch, probe) -> dict[str, float]:
    """Seconds of each computation a record must do, with plain torch on copies of the model."""
    model = build(net, rule)
    bp = alignment.convert(NETS[net](), "bp")
    bp.load_state_dict(model.state_dict(), strict=False)
    parts = {"rule pass": _median_time(lambda: _fwd_bwd(model, *batch))}
    if rule != "bp":
        parts["BP pass"] = _median_time(lambda: _fwd_bwd(bp, *batch))
    model.eval()
    bp.eval()
    parts["probe passes"] = _median_time(lambda: _fwd_bwd(model, *probe))
    if rule != "bp":
        parts["probe passes"] += _median_time(lambda: _fwd_bwd(bp, *probe))
    layers = [m for m in model.modules() if hasattr(m, "rule")]
    if rule == "dfa":
        names = [n for n, m in bp.named_modules() if hasattr(m, "rule")]
        names = [n for n, m in zip(names, layers, strict=True) if isinstance(m.rule, DFA)]
        parts["DFA mean input Jacobians"] = _median_time(
            lambda: _mean_input_jacobians(bp, probe[0], names), 3
        )
    if rule == "pfa":

        def products() -> None:
            with torch.no_grad():
                for layer in layers:
                    if isinstance(layer.rule, PFA):
                        b, w = masked(layer, "B"), layer.weight
                        layer.product(b, masked(layer, "R"))
                        b.T @ w.reshape(w.shape[0], -1)

        parts["PFA products B·R, BᵀW"] = _median_time(products)
    return parts


def _mean_input_jacobians(model: nn.Module, x: Tensor, names: list[str]) -> None:
    """Σ_n ∂logits[n]/∂(input of each layer)[n]: C vector-Jacobian products in one vmap."""
    modules = dict(model.named_modules())
    shapes: dict[str, torch.Size] = {}

    def keep_shape(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            shapes[name] = args[0].shape[1:]

        return hook

    handles = [modules[n].register_forward_pre_hook(keep_shape(n)) for n in names]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()

    def logits(eps: dict[str, Tensor]) -> Tensor:
        hooks = [
            modules[n].register_forward_pre_hook(lambda m, a, e=e: (a[0] + e, *a[1:]))
            for n, e in eps.items()
        ]
        try:
            return model(x).sum(0)
        finally:
            for h in hooks:
                h.remove()

    jacrev(logits)({n: torch.zeros(1, *shapes[n]) for n in names})


def _recorder(pkg, model, run_dir: Path, probe, opt, exclude=()):
    return pkg.Recorder(
        model,
        run_dir,
        probe=probe,
        optimizer=opt,
        schedule=pkg.recording.schedules.every(EVERY),
        jacobian_schedule=pkg.recording.schedules.never,
        min_records=0,
        exclude=exclude,
    )


def run_net(
    net: str,
    steps: int,
    rules: tuple[str, ...],
    workdir: Path,
    exclude: tuple[str, ...] = (),
    baseline: Package | None = None,
) -> list[Result]:
    """Plain, recorded (and, with ``baseline``, recorded by the baseline tree's recorder) copies
    of every rule's model, stepped side by side in a rotating order."""
    data = _batches(8, BATCH, seed=1)
    probe = _batches(1, PROBE, seed=2)[0]
    kinds = ("plain", "recorded") + (("baseline",) if baseline else ())
    copies: dict[tuple[str, str], tuple] = {}
    for rule in rules:
        plain = build(net, rule)
        recorded = copy.deepcopy(plain)
        opt = _optimizer(recorded)
        rec = _recorder(alignment, recorded, workdir / f"{net}-{rule}", probe, opt, exclude)
        copies[(rule, "plain")] = (plain, _optimizer(plain), None, contextlib.nullcontext)
        copies[(rule, "recorded")] = (recorded, opt, rec, contextlib.nullcontext)
        if baseline:
            with baseline.active() as old:
                torch.manual_seed(0)
                model = old.convert(NETS[net](), rule, **({"k": 10} if rule == "pfa" else {}))
                model.load_state_dict(plain.state_dict())
                opt_old = _optimizer(model)
                rec_old = _recorder(old, model, workdir / f"old-{net}-{rule}", probe, opt_old)
            copies[(rule, "baseline")] = (model, opt_old, rec_old, baseline.active)
    times = {key: [] for key in copies}
    order = [(rule, kind) for rule in rules for kind in kinds]
    for step in range(steps + 1):
        x, y = data[step % len(data)]
        shift = step % len(order)
        for key in order[shift:] + order[:shift]:
            model, opt, rec, context = copies[key]
            start = time.perf_counter()
            with context():
                if rec is not None:
                    rec.step(x, y)
                _train_step(model, opt, x, y)
            if step > 0:  # step 0: the recorder's one-time setup
                times[key].append(time.perf_counter() - start)
    results = []
    for rule in rules:
        step_s = statistics.median(times[(rule, "plain")])

        overhead, record_steps, windows = _measured(copies, times, rule, "recorded", step_s)
        old = _measured(copies, times, rule, "baseline", step_s) if baseline else (None,) * 3
        recorded, opt = copies[(rule, "recorded")][:2]
        jac_s = _jacobian_cost(recorded, opt, data[0], probe, workdir / f"j-{net}-{rule}")
        parts = floor(net, rule, data[0], probe)
        main = sum(v for k, v in parts.items() if k not in PROBE_PARTS)
        results.append(
            Result(
                net=net,
                rule=rule,
                steps=steps,
                records=steps // EVERY,
                step_ms=1e3 * step_s,
                overhead=overhead,
                record_steps=record_steps,
                floor_steps=main / step_s,
                probe_floor_steps=(sum(parts.values()) - main) / step_s,
                jacobian_steps=jac_s / step_s,
                floor_parts_ms={k: round(1e3 * v, 2) for k, v in parts.items()},
                window_overhead=windows,
                baseline_overhead=old[0],
                baseline_record_steps=old[1],
                baseline_window_overhead=old[2],
            )
        )
    return results


def _measured(copies: dict, times: dict, rule: str, kind: str, step_s: float):
    """(overhead, median record in training steps) of one recorded copy; closes its recorder."""
    _, _, rec, context = copies[(rule, kind)]
    with context():
        rec.close(final=False)
    seconds = alignment.open_run(rec.run_dir)["record_seconds"].values[1:]
    overhead = sum(times[(rule, kind)]) / sum(times[(rule, "plain")]) - 1.0
    return overhead, statistics.median(seconds) / step_s, _window_median(times, rule, kind)


def _window_median(times: dict, rule: str, kind: str) -> float:
    """Median over windows of ``EVERY`` steps (one record each) of Σ recorded / Σ plain − 1:
    robust to bursts of load on a shared machine, which otherwise land on whichever copies
    happen to be running (all records of a net fall on the same steps)."""
    recorded, plain = times[(rule, kind)], times[(rule, "plain")]
    ratios = [
        sum(recorded[i : i + EVERY]) / sum(plain[i : i + EVERY]) - 1.0
        for i in range(0, len(plain) - EVERY + 1, EVERY)
    ]
    return statistics.median(ratios) if ratios else float("nan")


def _jacobian_cost(model, opt, batch, probe, run_dir: Path) -> float:
    """Median extra seconds of a record with the Jacobians over one without."""
    rec = alignment.Recorder(
        model,
        run_dir,
        probe=probe,
        optimizer=opt,
        schedule=schedules.always,
        jacobian_schedule=schedules.every(2),
        flush_every=10**6,
        min_records=0,
    )
    for step in range(9):
        rec.step(*batch, step=step)
    seconds = [r.values["record_seconds"] for r in rec._buffer]
    rec._buffer.clear()
    rec.close(final=False)
    with_jac, without = seconds[2::2], seconds[1::2]
    return float(statistics.median(with_jac) - statistics.median(without))


def report(results: list[Result]) -> str:
    before = any(r.baseline_overhead is not None for r in results)
    head = f"{'net':<6}{'rule':<6}{'step ms':>9}"
    head += f"{'before':>9}{'(win)':>8}{'rec':>6}" if before else ""
    head += f"{'overhead':>10}{'(win)':>8}{'record':>8}{'floor':>7}{'floor/10':>9}"
    head += f"{'probe':>7}{'jacobian':>10}"
    lines = [head + "   floor parts (ms)"]
    for r in results:
        flag = (
            "  > target" if r.net == "conv" and max(r.overhead, r.window_overhead) > TARGET else ""
        )
        parts = ", ".join(f"{k} {v:.1f}" for k, v in r.floor_parts_ms.items())
        line = f"{r.net:<6}{r.rule:<6}{r.step_ms:>9.1f}"
        if before:
            line += (
                f"{100 * r.baseline_overhead:>8.1f}%{100 * r.baseline_window_overhead:>7.1f}%"
                f"{r.baseline_record_steps:>6.2f}"
            )
        line += (
            f"{100 * r.overhead:>9.1f}%{100 * r.window_overhead:>7.1f}%{r.record_steps:>8.2f}"
            f"{r.floor_steps:>7.2f}"
            f"{100 * r.floor_steps / EVERY:>8.1f}%{r.probe_floor_steps:>7.2f}"
            f"{r.jacobian_steps:>10.1f}   {parts}{flag}"
        )
        lines.append(line)
    lines.append(
        f"overhead: measured at every({EVERY}), Σ recorded / Σ plain − 1 (win: the median over "
        f"windows of {EVERY} steps; before: the --baseline tree's recorder, rec: its record); "
        "record, floor, probe, jacobian: in training steps (median plain step); floor: "
        "what a main record must compute, floor/10 the least overhead at every(10); probe: what a "
        "probe-schedule record adds to the floor (probe passes, DFA's mean Jacobians); jacobian: "
        "the measured extra cost of a probe-schedule record (with the Jacobians)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default="mlp,conv")
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--steps", type=int, default=200, help="timed steps per network")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20 steps, for a smoke run")
    parser.add_argument(
        "--exclude", default="", help="quantities not recorded, e.g. delta_alignment (floor as is)"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another source tree (e.g. a git worktree of an older commit) whose recorder runs "
        "beside this one's, as a third copy per rule: the 'before' column",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", alignment.UnconvertedLayerWarning)
    steps = 20 if args.quick else args.steps
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: list[Result] = []
    baseline = Package(args.baseline.resolve()) if args.baseline else None
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets.split(","):
            exclude = tuple(filter(None, args.exclude.split(",")))
            rules = tuple(args.rules.split(","))
            results += run_net(net, steps, rules, Path(tmp), exclude, baseline)
            print(report([r for r in results if r.net == net]), flush=True)
    print()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, cpu, {args.threads} thread(s), {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, load average {load_start:.1f} at the "
        f"start, {load:.1f} at the end"
    )
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
