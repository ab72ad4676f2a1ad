"""Training-step time and peak memory of every learning rule against plain torch.nn layers.

For each network (ResNet-20 at batch 128 on random CIFAR-shaped data, the MNIST MLP at batch 64)
and each candidate ("plain" = the unconverted model, then every name in ``alignment.RULES``), one
training step is forward, cross-entropy, backward, SGD(lr=0.01, momentum=0.9, weight_decay=1e-4,
fused=True, as the trainer's) step and zero_grad, on CPU with ``torch.set_num_threads(2)``.

Time: every candidate of a network lives in its own process (its own allocator and caches, as
in real training, where one process trains one model; ``--isolation shared`` puts them all in
this one), and the candidates are stepped round-robin, one at a time (each round runs one step of
every candidate, in an order shuffled with a fixed seed), so slow drift of the machine hits every
candidate alike. Reported: median and IQR of the step time, ratio = median / plain's;
also the median CPU time of the process per step (all threads), a measure of work that other
load on the machine barely changes when OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead
of spinning; with the default policy, spinning counts as CPU time).

Memory: each (network, candidate) runs in a fresh subprocess (``--memory-probe NET RULE``). It
imports, creates the data, resets the kernel's peak-RSS counter and records RSS as the baseline,
then builds model and optimizer and runs a few steps. Reported: peak RSS minus baseline, ratio =
that / plain's.

    python benchmarks/rule_speed.py                    # full run, about 5 minutes on 2 cores
    python benchmarks/rule_speed.py --quick            # smoke run
    python benchmarks/rule_speed.py --nets mlp --rules bp,pfa --rounds 200 --json out.json
    python benchmarks/rule_speed.py --compile          # also every candidate under torch.compile

Compiled mode (``--compile``, backend ``--backend``, default inductor): every candidate also runs
as ``torch.compile(model)`` (candidate ``<rule>+compiled``, compiled in its worker before the
timing starts); its ``time×`` is against compiled plain, ``vs eager`` against its own eager time.

Arithmetic floor (MLP): ``floor×`` is the multiply-add count of the rule's forward + backward
(the cheaper contraction order where there is a choice) over plain BP's, e.g. FA, sign symmetry
and KP 1, DFA below 1 (e_out·D is C × N_in instead of N_out × N_in), PFA above 1 (B·R or
the k·N_out feedback neurons); ``time×/floor×`` reads against the target 1.10.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from peak_rss import proc_status_kib, reset_peak_rss, ru_maxrss_kib
from torch import Tensor, nn

import alignment

PLAIN = "plain"
COMPILED = "+compiled"
TIME_TARGET = 1.10
MEMORY_TARGET = 1.15
MMAP_THRESHOLD = 64 * 1024
RULE_OPTIONS: dict[str, dict[str, object]] = {"pfa": {"k": 10}}
"""Options passed to ``alignment.convert`` (explicit even where they are the defaults)."""


@dataclass(frozen=True)
class NetSpec:
    """A benchmark network: how to build it, its input shape, batch size and default rounds."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    batch: int
    rounds: int
    warmup: int


NETS: dict[str, NetSpec] = {
    "resnet20": NetSpec(alignment.models.resnet20, (3, 32, 32), 10, 128, rounds=50, warmup=3),
    "mlp": NetSpec(alignment.models.mlp, (784,), 10, 64, rounds=500, warmup=20),
}


@dataclass
class Result:
    """One (network, candidate) row of the table."""

    net: str
    rule: str
    options: dict[str, object]
    parameters: int
    samples_ms: list[float] = field(repr=False)
    cpu_samples_ms: list[float] = field(repr=False)
    median_ms: float = float("nan")
    q1_ms: float = float("nan")
    q3_ms: float = float("nan")
    iqr_ms: float = float("nan")
    time_ratio: float = float("nan")
    cpu_median_ms: float = float("nan")
    cpu_ratio: float = float("nan")
    peak_mib: float = float("nan")
    memory_ratio: float = float("nan")
    memory_error: str | None = None
    eager_ratio: float = float("nan")
    """Compiled candidates: median / the same rule's eager median."""
    floor_ratio: float = float("nan")
    """MLP: the rule's forward + backward multiply-adds / plain BP's."""

    def summarise(self) -> None:
        samples = sorted(self.samples_ms)
        self.median_ms = statistics.median(samples)
        if len(samples) >= 2:
            self.q1_ms, _, self.q3_ms = statistics.quantiles(samples, n=4, method="inclusive")
        else:
            self.q1_ms = self.q3_ms = samples[0]
        self.iqr_ms = self.q3_ms - self.q1_ms
        self.cpu_median_ms = statistics.median(self.cpu_samples_ms)

    @property
    def meets_time(self) -> bool:
        return self.time_ratio <= TIME_TARGET

    @property
    def meets_memory(self) -> bool:
        return self.memory_ratio <= MEMORY_TARGET


def make_data(spec: NetSpec, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(spec.batch, *spec.input_shape, generator=generator)
    y = torch.randint(0, spec.num_classes, (spec.batch,), generator=generator)
    return x, y


def build(
    spec: NetSpec, candidate: str, seed: int = 0, backend: str = "inductor"
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The network (plain, or converted to the rule) and its SGD optimizer over all parameters;
    a candidate ``<rule>+compiled`` is wrapped in ``torch.compile``."""
    torch.manual_seed(seed)
    model = spec.build()
    rule = candidate.removesuffix(COMPILED)
    if rule != PLAIN:
        model = alignment.convert(model, rule, **RULE_OPTIONS.get(rule, {}))
    model.train()
    optimizer = torch.optim.SGD(  # fused: what alignment's trainer uses
        model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, fused=True
    )
    if candidate.endswith(COMPILED):
        model = torch.compile(model, backend=backend)
    return model, optimizer


def linear_macs(rule: str, rows: int, n_in: int, n_out: int, classes: int, first: bool) -> int:
    """Multiply-adds of one Linear layer's forward + backward under ``rule`` (``first``: its
    input needs no error), in the cheaper contraction order where the rule leaves a choice."""
    base = 2 * rows * n_in * n_out  # y = xWᵀ and grad_W = δᵀx
    e_in = 0 if first else rows * n_in * n_out  # δ·F for every rule with a W-shaped feedback
    if rule == "dfa":
        e_in = 0 if first else rows * classes * n_in  # e_out·D
    elif rule in ("pfa", "pfa_o"):
        n_mid = int(RULE_OPTIONS.get(rule, {}).get("k", 1)) * n_out
        product = 2 * n_out * n_mid * n_in + e_in  # B·R, Bᵀ·grad_W, δ·(B·R)
        two_stage = rows * n_mid * (n_out + n_in) + (0 if first else rows * n_mid * n_in)
        e_in = min(product, two_stage)  # a = δB, grad_R = aᵀx, e_in = a·R
    return base + e_in


def floor_ratio(name: str, candidate: str) -> float:
    """The rule's multiply-adds of forward + backward over plain BP's (MLP only, else NaN)."""
    if name != "mlp":
        return float("nan")
    spec, rule = NETS[name], candidate.removesuffix(COMPILED)
    linears = [m for m in spec.build().modules() if isinstance(m, nn.Linear)]

    def macs(r: str) -> int:
        return sum(
            linear_macs(r, spec.batch, m.in_features, m.out_features, spec.num_classes, i == 0)
            for i, m in enumerate(linears)
        )

    return macs(rule) / macs("bp")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


class _Candidate:
    """One candidate's model, optimizer and data, stepped on request (in this process)."""

    def __init__(self, name: str, rule: str, threads: int, backend: str = "inductor") -> None:
        torch.set_num_threads(threads)
        spec = NETS[name]
        self.x, self.y = make_data(spec)
        self.model, self.optimizer = build(spec, rule, backend=backend)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        if rule.endswith(COMPILED):  # compile now, before any timing
            train_step(self.model, self.optimizer, self.x, self.y)

    def step(self) -> tuple[float, float]:
        """(wall ms, CPU ms) of one training step."""
        start, cpu_start = time.perf_counter(), time.process_time()
        train_step(self.model, self.optimizer, self.x, self.y)
        return (time.perf_counter() - start) * 1e3, (time.process_time() - cpu_start) * 1e3


def _worker(connection, name: str, rule: str, threads: int, backend: str) -> None:
    """A candidate in its own process: one step per "step" message, until "stop"."""
    candidate = _Candidate(name, rule, threads, backend)
    connection.send(candidate.parameters)
    gc.collect()
    gc.disable()
    while connection.recv() == "step":
        connection.send(candidate.step())


class _Remote:
    """A candidate in a subprocess (see :func:`_worker`); only one runs at a time."""

    def __init__(self, name: str, rule: str, threads: int, backend: str = "inductor") -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        args = (child, name, rule, threads, backend)
        self.process = context.Process(target=_worker, args=args)
        self.process.start()

    @property
    def parameters(self) -> int:
        if not hasattr(self, "_parameters"):
            self._parameters = self.connection.recv()
        return self._parameters

    def step(self) -> tuple[float, float]:
        self.connection.send("step")
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send("stop")
        self.process.join()


def time_network(
    name: str,
    rules: Sequence[str],
    rounds: int,
    warmup: int,
    seed: int,
    *,
    threads: int = 2,
    isolation: str = "process",
    blocks: int = 1,
    backend: str = "inductor",
) -> dict[str, Result]:
    """Round-robin step times (ms) of every candidate on one network.

    ``isolation="process"``: each candidate lives in its own process (its own allocator and
    caches, as in real training, where a process trains one model), and the parent steps them
    one at a time; ``"shared"``: all candidates in this process. ``blocks``: the rounds are
    split over this many blocks, each with fresh processes, so that how one process happens to
    lay out its memory does not decide a candidate's time.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle workers must not spin
    samples: dict[str, list[float]] = {rule: [] for rule in rules}
    cpu_samples: dict[str, list[float]] = {rule: [] for rule in rules}
    parameters: dict[str, int] = {}
    order = list(rules)
    rng = random.Random(seed)
    per_block = [rounds // blocks + (i < rounds % blocks) for i in range(blocks)]
    for block_rounds in per_block:
        if isolation == "process":  # started together: compiled candidates compile at once
            candidates = {rule: _Remote(name, rule, threads, backend) for rule in rules}
        else:
            candidates = {rule: _Candidate(name, rule, threads, backend) for rule in rules}
        parameters = {rule: c.parameters for rule, c in candidates.items()}
        for _ in range(warmup):
            for rule in order:
                candidates[rule].step()
        gc.collect()
        gc.disable()
        try:
            for _ in range(block_rounds):
                rng.shuffle(order)
                for rule in order:
                    wall_ms, cpu_ms = candidates[rule].step()
                    samples[rule].append(wall_ms)
                    cpu_samples[rule].append(cpu_ms)
        finally:
            gc.enable()
            for candidate in candidates.values():
                if isinstance(candidate, _Remote):
                    candidate.close()
            del candidates
    results = {}
    for rule in rules:
        result = Result(
            net=name,
            rule=rule,
            options=dict(RULE_OPTIONS.get(rule, {})),
            parameters=parameters[rule],
            samples_ms=samples[rule],
            cpu_samples_ms=cpu_samples[rule],
        )
        result.summarise()
        results[rule] = result
    return results


# ---------------------------------------------------------------------------------------------
# Memory probe (runs in a fresh subprocess per network and candidate)


def memory_probe(
    name: str, rule: str, steps: int, threads: int, backend: str = "inductor"
) -> dict[str, object]:
    """Peak RSS growth (MiB) from building ``rule``'s model and optimizer and training it."""
    torch.set_num_threads(threads)
    spec = NETS[name]
    x, y = make_data(spec)
    gc.collect()
    reset = reset_peak_rss()
    baseline = proc_status_kib("VmRSS") if reset else None
    if baseline is None:  # no /proc: ru_maxrss is a lifetime peak, baseline is the peak so far
        baseline = ru_maxrss_kib()
    model, optimizer = build(spec, rule, backend=backend)
    for _ in range(steps):
        train_step(model, optimizer, x, y)
    peak = proc_status_kib("VmHWM") if reset else None
    if peak is None:
        peak = ru_maxrss_kib()
    return {
        "net": name,
        "rule": rule,
        "baseline_mib": baseline / 1024,
        "peak_mib": (peak - baseline) / 1024,
        "method": "VmHWM after clear_refs" if reset else "ru_maxrss",
    }


def run_memory_probe(
    name: str, rule: str, steps: int, threads: int, fixed_mmap: bool, backend: str = "inductor"
) -> tuple[float, str | None]:
    """Run :func:`memory_probe` in a fresh interpreter; (peak MiB, error or None).

    With ``fixed_mmap`` glibc serves every allocation ≥ 64 KiB by mmap and returns it on free
    (no dynamic threshold, no heap fragmentation), so peak RSS follows the peak of live tensors
    and repeats agree to < 1 MiB instead of ±15 MiB.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", name, rule]
    command += ["--probe-steps", str(steps), "--threads", str(threads), "--backend", backend]
    env = dict(os.environ)
    if fixed_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    process = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if process.returncode != 0:
        lines = process.stderr.strip().splitlines()
        return float("nan"), lines[-1] if lines else f"exit status {process.returncode}"
    for line in reversed(process.stdout.splitlines()):
        if line.startswith("{"):
            return float(json.loads(line)["peak_mib"]), None
    return float("nan"), "no result line"


# ---------------------------------------------------------------------------------------------
# Report


def _yes_no(ok: bool, ratio: float) -> str:
    return "-" if ratio != ratio else ("yes" if ok else "no")


def _number(value: float, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value != value else f"{value:>{width}.{digits}f}"


def format_table(results: Sequence[Result]) -> str:
    header = (
        f"{'network':<9} {'rule':<15} {'median ms':>10} {'IQR ms':>8} {'time×':>7} "
        f"{'peak MiB':>9} {'mem×':>7}  {'time≤1.10':>9} {'mem≤1.15':>8}  {'CPU ms':>9} {'CPU×':>7}"
        f"  {'vs eager':>8} {'floor×':>7} {'time×/floor×':>12}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for r in results:
        if previous is not None and r.net != previous:
            lines.append("")
        previous = r.net
        meets_time = _yes_no(r.meets_time, r.time_ratio)
        meets_memory = _yes_no(r.meets_memory, r.memory_ratio)
        lines.append(
            f"{r.net:<9} {r.rule:<15} {r.median_ms:>10.2f} {r.iqr_ms:>8.2f} "
            f"{r.time_ratio:>7.3f} {_number(r.peak_mib, 9, 1)} {_number(r.memory_ratio, 7, 3)}  "
            f"{meets_time:>9} {meets_memory:>8}  "
            f"{r.cpu_median_ms:>9.2f} {r.cpu_ratio:>7.3f}  {_number(r.eager_ratio, 8, 3)} "
            f"{_number(r.floor_ratio, 7, 3)} {_number(r.time_ratio / r.floor_ratio, 12, 3)}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated: resnet20,mlp")
    parser.add_argument(
        "--rules", default=",".join(alignment.RULES), help="comma-separated rule names (all)"
    )
    parser.add_argument(
        "--rounds", type=int, help="timed rounds per network (default: resnet20 50, mlp 500)"
    )
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default: 3 / 20)")
    parser.add_argument("--probe-steps", type=int, default=3, help="steps per memory probe")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the round order")
    parser.add_argument(
        "--isolation",
        choices=["process", "shared"],
        default="process",
        help="time each candidate in its own process (default) or all in this one",
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=3,
        help="split the rounds over this many blocks of fresh processes (default 3)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--probe-jobs", type=int, default=2, help="memory probes run at once")
    parser.add_argument(
        "--malloc-default",
        action="store_true",
        help="leave glibc's dynamic mmap threshold on in the probes (noisier peaks)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time every candidate under torch.compile"
    )
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds, 1 warmup")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--memory-probe", nargs=2, metavar=("NET", "RULE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.nets = [n for n in args.nets.split(",") if n]
    args.rules = [r for r in args.rules.split(",") if r and r != PLAIN]
    for net in args.nets:
        if net not in NETS:
            parser.error(f"unknown network {net!r}; choose from {', '.join(NETS)}")
    for rule in args.rules:
        if rule not in alignment.RULES:
            parser.error(f"unknown rule {rule!r}; choose from {', '.join(alignment.RULES)}")
    if args.quick:
        args.rounds = args.rounds or 3
        args.warmup = 1 if args.warmup is None else args.warmup
        args.probe_steps = 1
    return args


def probe_network(
    name: str, candidates: Sequence[str], args: argparse.Namespace
) -> dict[str, tuple[float, str | None]]:
    """Memory probes of every candidate on one network, ``args.probe_jobs`` subprocesses at once."""
    print(f"[{name}] memory probes ({args.probe_steps} steps each)", flush=True)
    options = (args.probe_steps, args.threads, not args.malloc_default, args.backend)

    def probe(rule: str) -> tuple[float, str | None]:
        return run_memory_probe(name, rule, *options)

    with ThreadPoolExecutor(max(1, args.probe_jobs)) as pool:
        return dict(zip(candidates, pool.map(probe, candidates), strict=True))


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _finite(value: object) -> object:
    return None if isinstance(value, float) and value != value else value


def write_json(
    path: Path,
    results: Sequence[Result],
    args: argparse.Namespace,
    loads: dict[str, list[float | None]],
) -> None:
    payload = {
        "torch": torch.__version__,
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "seed": args.seed,
        "probe_steps": args.probe_steps,
        "malloc_mmap_threshold": None if args.malloc_default else MMAP_THRESHOLD,
        "load_average_before_after_timing": loads,
        "targets": {"time_ratio": TIME_TARGET, "memory_ratio": MEMORY_TARGET},
        "nets": {
            n: {"batch": NETS[n].batch, "input_shape": list(NETS[n].input_shape)} for n in args.nets
        },
        "results": [
            {
                **{k: _finite(v) for k, v in asdict(r).items()},
                "meets_time": r.meets_time,
                "meets_memory": r.meets_memory,
            }
            for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        name, rule = args.memory_probe
        print(json.dumps(memory_probe(name, rule, args.probe_steps, args.threads, args.backend)))
        return 0
    torch.set_num_threads(args.threads)
    candidates = [PLAIN, *args.rules]
    if args.compile:
        candidates += [c + COMPILED for c in candidates]
    print(
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"candidates: {', '.join(candidates)}",
        flush=True,
    )
    results: list[Result] = []
    loads: dict[str, list[float | None]] = {}
    if (_load() or 0.0) > 0.5:
        print(
            f"warning: 1-min load average is {_load():.2f} before starting: other processes use "
            "the CPUs, so step times will be inflated and noisy"
            + ("" if os.environ.get("OMP_WAIT_POLICY") else " (OMP_WAIT_POLICY=PASSIVE helps)"),
            flush=True,
        )
    started = time.perf_counter()
    for name in args.nets:
        spec = NETS[name]
        rounds = args.rounds or spec.rounds
        warmup = spec.warmup if args.warmup is None else args.warmup
        print(f"[{name}] batch {spec.batch}: {warmup} warm-up + {rounds} rounds", flush=True)
        load_before = _load()
        timed = time_network(
            name,
            candidates,
            rounds,
            warmup,
            args.seed,
            threads=args.threads,
            isolation=args.isolation,
            blocks=max(1, min(args.blocks, rounds)),
            backend=args.backend,
        )
        loads[name] = [load_before, _load()]
        print(f"[{name}] 1-min load average before/after timing: {loads[name]}", flush=True)
        if not args.no_memory:
            for rule, (peak, error) in probe_network(name, candidates, args).items():
                timed[rule].peak_mib, timed[rule].memory_error = peak, error
        for rule, result in timed.items():
            compiled = rule.endswith(COMPILED)
            plain = timed[PLAIN + COMPILED if compiled else PLAIN]
            result.time_ratio = result.median_ms / plain.median_ms
            result.cpu_ratio = result.cpu_median_ms / plain.cpu_median_ms
            result.memory_ratio = result.peak_mib / plain.peak_mib
            if compiled:
                result.eager_ratio = result.median_ms / timed[rule.removesuffix(COMPILED)].median_ms
            result.floor_ratio = floor_ratio(name, rule)
            results.append(result)
    print(f"\n{format_table(results)}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    errors = [f"{r.net}/{r.rule}: {r.memory_error}" for r in results if r.memory_error]
    for error in errors:
        print(f"memory probe failed: {error}", file=sys.stderr)
    if args.json:
        write_json(args.json, results, args, loads)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
