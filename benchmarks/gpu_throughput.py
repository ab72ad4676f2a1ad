"""GPU training throughput of every rule against plain torch, under AMP, eager and compiled.

Workloads (synthetic data on the device, 10 / 1000 classes): ResNet-20 at batch 128 (32 px) and
torchvision's ResNet-18 at batch 256 (224 px). One training step is the trainer's: forward and
cross-entropy under autocast (fp16 with a GradScaler by default), backward, fused SGD (momentum
0.9, weight decay 1e-4), ``zero_grad``; the mechanics are :class:`alignment.training.amp.Precision`.
Candidates: ``plain`` (the unconverted model) and every rule of ``alignment.RULES``, each eager and
under ``torch.compile``. Per candidate: ``--warmup`` steps (compilation included), then
``--windows`` windows of ``--steps`` steps between two device synchronisations; step time =
median over windows of the window's mean. Reported: step time, ratio to plain (same network and
mode), images/s, peak memory (``torch.cuda.max_memory_allocated``), and whether the ratio meets
the target 1.10. The JSON (``--out``) is rewritten after every candidate, so a run cut short keeps
what it measured.

    python benchmarks/gpu_throughput.py --out gpu.json          # the full table (CUDA)
    python benchmarks/gpu_throughput.py --modes eager --rules fa,pfa --out gpu.json
    python benchmarks/gpu_throughput.py --smoke --out smoke.json  # tiny, CPU: the script works
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import alignment
from alignment.training.amp import Precision

PLAIN = "plain"
TARGET = 1.10


@dataclass(frozen=True)
class Workload:
    """A network, its batch and image size."""

    build: Callable[[], nn.Module]
    batch: int
    size: int
    classes: int


WORKLOADS = {
    "resnet20": Workload(alignment.models.resnet20, 128, 32, 10),
    "resnet18": Workload(lambda: torchvision.models.resnet18(num_classes=1000), 256, 224, 1000),
}
SMOKE = {
    "resnet20": Workload(alignment.models.resnet20, 2, 8, 10),
    "resnet18": Workload(lambda: torchvision.models.resnet18(num_classes=10), 2, 32, 10),
}


@dataclass
class Row:
    net: str
    mode: str
    rule: str
    batch: int
    size: int
    step_ms: float
    ratio: float
    images_per_s: float
    peak_mib: float
    compile_s: float
    meets_target: bool | None


def build(workload: Workload, rule: str, device: str, mode: str, backend: str):
    torch.manual_seed(0)
    model = workload.build()
    if rule != PLAIN:
        model = alignment.convert(model, rule)
    model = model.to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, fused=True
    )
    net = torch.compile(model, backend=backend) if mode == "compiled" else model
    return net, optimizer


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    name: str, workload: Workload, rule: str, mode: str, args: argparse.Namespace
) -> tuple[float, float, float]:
    """(median step ms, peak MiB, warm-up seconds) of one candidate."""
    device = args.device
    torch._dynamo.reset()  # a fresh compile per candidate; the last candidate's memory is free
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (workload.batch, 3, workload.size, workload.size)
    x = torch.randn(shape, device=device, generator=generator)
    y = torch.randint(0, workload.classes, (workload.batch,), device=device, generator=generator)
    net, optimizer = build(workload, rule, device, mode, args.backend)
    precision = Precision(args.amp, device)

    def step() -> None:
        with precision.autocast():
            loss = F.cross_entropy(net(x), y)
        precision.backward(loss)
        precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    windows = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        windows.append((time.perf_counter() - start) * 1e3 / args.steps)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else math.nan
    return statistics.median(windows), peak, warmup_s


def format_table(rows: Sequence[Row]) -> str:
    header = (
        f"{'network':<9} {'mode':<9} {'rule':<6} {'step ms':>9} {'×plain':>7} {'img/s':>9} "
        f"{'peak MiB':>9} {'≤1.10':>6} {'warm-up s':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ok = "-" if r.meets_target is None else ("yes" if r.meets_target else "no")
        lines.append(
            f"{r.net:<9} {r.mode:<9} {r.rule:<6} {r.step_ms:>9.2f} {r.ratio:>7.3f} "
            f"{r.images_per_s:>9.0f} {r.peak_mib:>9.0f} {ok:>6} {r.compile_s:>9.1f}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON results (rewritten per row)")
    parser.add_argument("--nets", default="resnet20,resnet18", help="comma-separated")
    parser.add_argument("--rules", default=",".join(alignment.RULES), help="comma-separated")
    parser.add_argument("--modes", default="eager,compiled", help="eager, compiled or both")
    parser.add_argument("--amp", default="fp16", choices=["off", "bf16", "fp16"])
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compile included)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows (median)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes on CPU, bf16, aot_eager, 1 step: a check"
    )
    args = parser.parse_args(argv)
    args.nets = [n for n in args.nets.split(",") if n]
    args.rules = [r for r in args.rules.split(",") if r and r != PLAIN]
    args.modes = [m for m in args.modes.split(",") if m]
    for net in args.nets:
        if net not in WORKLOADS:
            parser.error(f"unknown network {net!r}; choose from {', '.join(WORKLOADS)}")
    for rule in args.rules:
        if rule not in alignment.RULES:
            parser.error(f"unknown rule {rule!r}; choose from {', '.join(alignment.RULES)}")
    for mode in args.modes:
        if mode not in ("eager", "compiled"):
            parser.error(f"unknown mode {mode!r}; choose from eager, compiled")
    if args.smoke:
        args.device, args.amp, args.backend = "cpu", "bf16", "aot_eager"
        args.warmup, args.steps, args.windows = 1, 1, 2
    elif args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or --smoke for the CPU check")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = SMOKE if args.smoke else WORKLOADS
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__}, {name}, amp={args.amp}, backend={args.backend}", flush=True)
    rows: list[Row] = []
    for net in args.nets:
        workload = workloads[net]
        for mode in args.modes:
            plain_ms = math.nan
            for rule in [PLAIN, *args.rules]:
                step_ms, peak, warmup_s = measure(net, workload, rule, mode, args)
                plain_ms = step_ms if rule == PLAIN else plain_ms
                ratio = step_ms / plain_ms
                rows.append(
                    Row(
                        net,
                        mode,
                        rule,
                        workload.batch,
                        workload.size,
                        step_ms,
                        ratio,
                        workload.batch / step_ms * 1e3,
                        peak,
                        warmup_s,
                        None if rule == PLAIN else ratio <= TARGET,
                    )
                )
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
                write_json(args, name, rows)
    print(f"\n{format_table(rows)}\nwrote {args.out}")
    return 0


def write_json(args: argparse.Namespace, device_name: str, rows: Sequence[Row]) -> None:
    payload = {
        "torch": torch.__version__,
        "device": device_name,
        "amp": args.amp,
        "backend": args.backend,
        "warmup": args.warmup,
        "steps_per_window": args.steps,
        "windows": args.windows,
        "target": TARGET,
        "rows": [{k: (None if v != v else v) for k, v in asdict(r).items()} for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
