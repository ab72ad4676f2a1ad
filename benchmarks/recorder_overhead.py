"""Cost of the recorder: training with it at its default schedule against training without it.

For each network (the MNIST MLP 784-512-512-10 at batch 64, ResNet-20 at batch 128 on random
CIFAR-shaped data) and rule, two identical converted models train side by side in one process on
the same batches (SGD lr 0.01, momentum 0.9, weight decay 1e-4): "plain" runs the training step,
"recorded" runs ``rec.step(x, y)`` and then the same training step. The two alternate step by step
(the order flipping every step), so slow drift of a shared machine hits both alike.

The window is one epoch of the paper's run (937 steps for MNIST at batch 64, 351 for CIFAR-10's
45k training images at batch 128) from step 0, with ``steps_per_epoch`` set accordingly: it holds
exactly one epoch's worth of the default schedule (``every(200) | epoch_end``, Jacobians at
``epoch_end``), so its overhead is that of a full run. Reported per (network, rule):

* overhead: total recorded time / total plain time − 1 over the window (target ≤ 10 %);
* the cost of one main record, of one Jacobian record (the extra time of a Jacobian step over a
  main record) and of one flush (write of a segment), in ms and in training steps;
* the projected overhead of the paper's full run (MNIST 40 epochs, CIFAR-10 250 epochs) from those
  costs and the schedule's record counts (a check on the window, whose few records are noisy);
* bytes stored per recorded step: the size on disk of ``record.zarr`` after ``close()`` over the
  number of recorded steps (plus the static part, once per run).

    python benchmarks/recorder_overhead.py                       # both nets, ~10 min on 1 core
    python benchmarks/recorder_overhead.py --quick               # smoke run
    python benchmarks/recorder_overhead.py --nets mlp --rules bp,fa,dfa,pfa --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import alignment
from alignment.recording import schedules
from alignment.recording.recorder import default_jacobian_schedule, default_schedule

TARGET = 0.10


@dataclass(frozen=True)
class Net:
    name: str
    batch: int
    input_shape: tuple[int, ...]
    steps_per_epoch: int
    epochs: int

    def build(self, rule: str) -> nn.Module:
        torch.manual_seed(0)
        model = alignment.models.mlp() if self.name == "mlp" else alignment.models.resnet20()
        return alignment.convert(model, rule)


NETS = {
    "mlp": Net("mlp", 64, (1, 28, 28), 937, 40),
    "resnet20": Net("resnet20", 128, (3, 32, 32), 351, 250),
}


@dataclass
class Result:
    net: str
    rule: str
    steps: int
    probe_size: int
    step_ms: float
    overhead: float
    main_record_ms: float
    jacobian_record_ms: float
    flush_ms: float
    idle_us: float
    records: int
    jacobian_records: int
    projected_overhead: float
    bytes_per_step: float
    static_bytes: int
    times: dict = field(default_factory=dict, repr=False)


def _clock(device: torch.device) -> float:
    """perf_counter after the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _batches(net: Net, count: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(net.batch, *net.input_shape, generator=g),
            torch.randint(0, 10, (net.batch,), generator=g),
        )
        for _ in range(count)
    ]


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_one(
    net: Net, rule: str, steps: int, probe_size: int, workdir: Path, device: torch.device
) -> Result:
    plain = net.build(rule).to(device)
    recorded = copy.deepcopy(plain)
    opt_plain, opt_recorded = _optimizer(plain), _optimizer(recorded)
    data = [(x.to(device), y.to(device)) for x, y in _batches(net, 8, seed=1)]
    probe_net = Net(net.name, probe_size, net.input_shape, 1, 1)
    probe = tuple(t.to(device) for t in _batches(probe_net, 1, seed=2)[0])
    run_dir = workdir / f"{net.name}-{rule}"
    rec = alignment.Recorder(
        recorded, run_dir, probe=probe, optimizer=opt_recorded, steps_per_epoch=net.steps_per_epoch
    )
    flushes: list[float] = []
    real_flush = rec.flush

    def timed_flush() -> None:
        start = _clock(device)
        pending = bool(rec._buffer or rec._raw_buffer)
        real_flush()
        if pending:
            flushes.append(_clock(device) - start)

    rec.flush = timed_flush  # type: ignore[method-assign]
    times: dict[str, list[float]] = {
        "plain": [],
        "recorded": [],
        "main": [],
        "jacobian": [],
        "idle": [],
    }
    for step in range(steps):
        x, y = data[step % len(data)]
        order = ("plain", "recorded") if step % 2 == 0 else ("recorded", "plain")
        for which in order:
            start = _clock(device)
            if which == "plain":
                _train_step(plain, opt_plain, x, y)
                times["plain"].append(_clock(device) - start)
                continue
            before = len(flushes)
            recorded_now = rec.step(x, y)
            middle = _clock(device)
            _train_step(recorded, opt_recorded, x, y)
            times["recorded"].append(_clock(device) - start)
            spent = middle - start - sum(flushes[before:])
            if not recorded_now:
                times["idle"].append(spent)
            elif rec.jacobian_schedule(step):
                times["jacobian"].append(spent)
            else:
                times["main"].append(spent)
    rec.close()
    static = _disk_bytes(run_dir / "record.zarr" / "static")
    stored = _disk_bytes(run_dir / "record.zarr") - static
    records = len(times["main"]) + len(times["jacobian"])
    main_s, jac_total_s = calibrate(
        recorded, opt_recorded, data[0], probe, workdir / f"calibration-{net.name}-{rule}"
    )
    step_s = statistics.median(times["plain"])
    jac_s = jac_total_s - main_s
    flush_s = statistics.median(flushes) if flushes else 0.0
    idle_s = statistics.median(times["idle"]) if times["idle"] else 0.0

    total = net.steps_per_epoch * net.epochs + 1
    main_steps = default_schedule(net.steps_per_epoch).steps(total)
    jac_steps = set(default_jacobian_schedule(net.steps_per_epoch).steps(total))
    n_records = len(set(main_steps) | jac_steps)
    projected = (
        n_records * main_s
        + len(jac_steps) * jac_s
        + n_records / rec.flush_every * flush_s
        + total * idle_s
    ) / (total * step_s)
    return Result(
        net=net.name,
        rule=rule,
        steps=steps,
        probe_size=probe_size,
        step_ms=1e3 * step_s,
        overhead=sum(times["recorded"]) / sum(times["plain"]) - 1.0,
        main_record_ms=1e3 * main_s,
        jacobian_record_ms=1e3 * jac_s,
        flush_ms=1e3 * flush_s,
        idle_us=1e6 * idle_s,
        records=records,
        jacobian_records=len(times["jacobian"]),
        projected_overhead=projected,
        bytes_per_step=stored / max(records, 1),
        static_bytes=static,
        times={k: [round(v, 6) for v in values] for k, values in times.items()},
    )


def calibrate(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor],
    probe: tuple[Tensor, Tensor],
    run_dir: Path,
    mains: int = 7,
    jacobians: int = 3,
) -> tuple[float, float]:
    """Median time of one main record and of one record with the Jacobians (seconds), from a
    separate recorder on the same model (the window holds too few records for a median)."""
    rec = alignment.Recorder(
        model,
        run_dir,
        probe=probe,
        optimizer=opt,
        schedule=schedules.always,
        jacobian_schedule=schedules.at(range(mains, mains + jacobians)),
        flush_every=10**6,
    )
    times = []
    for step in range(mains + jacobians):
        start = _clock(batch[0].device)
        rec.step(*batch, step=step)
        times.append(_clock(batch[0].device) - start)
    rec._buffer.clear()
    rec.close()
    return statistics.median(times[1:mains]), statistics.median(times[mains:])


def report(results: list[Result]) -> str:
    lines = [
        f"{'net':<9}{'rule':<6}{'window':>7}{'step ms':>9}{'overhead':>10}{'projected':>10}"
        f"{'main rec ms':>12}{'Jacobian ms':>12}{'flush ms':>9}{'bytes/step':>11}",
    ]
    for r in results:
        flag = "" if r.overhead <= TARGET else "  > target"
        lines.append(
            f"{r.net:<9}{r.rule:<6}{r.steps:>7}{r.step_ms:>9.1f}{100 * r.overhead:>9.1f}%"
            f"{100 * r.projected_overhead:>9.1f}%{r.main_record_ms:>12.1f}"
            f"{r.jacobian_record_ms:>12.0f}{r.flush_ms:>9.1f}{r.bytes_per_step:>11.0f}{flag}"
        )
    counts = ", ".join(f"{r.net}/{r.rule} {r.records} ({r.jacobian_records})" for r in results)
    lines.append(
        "overhead: measured over the window; projected: full paper run from the per-record costs. "
        "main rec: one record step; Jacobian: its extra time when the step also records the "
        f"Jacobians. Records (Jacobian records) per window: {counts}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", default="mlp,resnet20")
    parser.add_argument("--rules", default=None, help="default: mlp bp,fa,dfa,pfa; resnet20 pfa,fa")
    parser.add_argument("--steps", type=int, default=None, help="window (default: one epoch)")
    parser.add_argument("--probe-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="a short window, for a smoke run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    defaults = {"mlp": "bp,fa,dfa,pfa", "resnet20": "pfa,fa"}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets.split(","):
            net = NETS[name]
            steps = args.steps or (30 if args.quick else net.steps_per_epoch)
            for rule in (args.rules or defaults[name]).split(","):
                device = torch.device(args.device)
                result = run_one(net, rule, steps, args.probe_size, Path(tmp), device)
                results.append(result)
                print(report([result]).splitlines()[1], flush=True)
    print()
    print(
        f"torch {torch.__version__}, {args.device}"
        f"{' (' + torch.cuda.get_device_name() + ')' if args.device == 'cuda' else ''}, "
        f"{args.threads} thread(s), {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, probe {args.probe_size} samples"
    )
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
