"""Cost of the opt-in network-dynamics families per probe record, against a training epoch.

Networks (batch 64, random MNIST-shaped data, 10 classes, one thread as in ``make demo``): the
demo's MLP 784-512-512-10 (``alignment/configs/demo/base.yaml``: ``model: mlp``) and the small
convnet of ``benchmarks/recorder_overhead.py`` (conv(1→8)+BN+pool, conv(8→16)+BN+pool, fc 784→64,
fc 64→10). Rules: the demo's six on the MLP (bp, fa, dfa, usf, pfa k = 10, pfa_o), bp, fa, dfa
and pfa on the convnet. Probe: the demo's 16 samples.

For each (network, rule) one recorder per setting records the same untrained model at every step
(``schedule`` and ``jacobian_schedule`` ``always``): the default quantities alone (``none``), plus
each family alone, plus all three. The settings take turns record by record (so drift of a shared
machine hits all alike); the first record of each (one-time setup and caches) is not counted.
Times are CPU seconds of this process (``time.process_time``, one thread), which a machine
shared with other jobs inflates far less than wall-clock time. Reported: the median CPU time of a
probe record per setting (``rec.step``), and for each family its marginal cost (median with it −
median without) in seconds and in % of a training epoch: the median training step (forward +
backward + SGD step, batch 64) × ``--steps-per-epoch`` (the demo's 62). The demo records the
probe schedule once per epoch (``record.jacobian: epoch``), so that percentage is the family's
overhead on the demo's training time.

    python benchmarks/dynamics_cost.py                     # both nets, ~3 min on 1 core
    python benchmarks/dynamics_cost.py --nets mlp --rules pfa --records 3
    python benchmarks/dynamics_cost.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import alignment
from alignment.recording import schedules
from alignment.recording.schema import DYNAMICS

sys.path.insert(0, str(Path(__file__).parent))
from recorder_overhead import convnet  # the same convnet as the overhead benchmark

BATCH = 64
PROBE = 16
NETS = {"mlp": alignment.models.mlp, "conv": convnet}
RULES = {"mlp": ("bp", "fa", "dfa", "usf", "pfa", "pfa_o"), "conv": ("bp", "fa", "dfa", "pfa")}
SETTINGS = {"none": [], **{family: [family] for family in DYNAMICS}, "all": list(DYNAMICS)}


def build(net: str, rule: str) -> nn.Module:
    torch.manual_seed(0)
    return alignment.convert(NETS[net](), rule, **({"k": 10} if rule == "pfa" else {}))


def batch(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g)


def step_seconds(net: str, rule: str, repeats: int = 15) -> float:
    """Median CPU seconds of one training step (batch 64, SGD with momentum)."""
    model = build(net, rule)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x, y = batch(BATCH, 1)
    times = []
    for i in range(repeats + 2):
        start = time.process_time()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.process_time() - start)
    return statistics.median(times)


def record_seconds(net: str, rule: str, records: int, root: Path) -> dict[str, float]:
    """Median CPU seconds of a probe record for every setting (first record dropped)."""
    model = build(net, rule)
    probe, data = batch(PROBE, 2), batch(BATCH, 3)
    recorders = {
        name: alignment.Recorder(
            model,
            root / f"{net}-{rule}-{name}",
            probe=probe,
            schedule=schedules.always,
            jacobian_schedule=schedules.always,
            dynamics=families,
            min_records=0,
            final=False,
        )
        for name, families in SETTINGS.items()
    }
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for i in range(records + 1):
        for name, rec in recorders.items():
            start = time.process_time()
            rec.step(*data)
            if i > 0:
                times[name].append(time.process_time() - start)
    for rec in recorders.values():
        rec.close()
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--rules", nargs="+", default=None, help="default: per net, see above")
    parser.add_argument("--records", type=int, default=5, help="probe records timed per setting")
    parser.add_argument("--steps-per-epoch", type=int, default=62, help="the demo's 4000/64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(
        f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s); probe "
        f"{PROBE}, batch {BATCH}; epoch = {args.steps_per_epoch} steps; "
        "CPU seconds; cost = marginal seconds per probe record (% of an epoch)"
    )
    header = f"{'net':5} {'rule':6} {'step ms':>8} {'epoch s':>8} {'probe rec s':>11}"
    print(header + "".join(f" {name:>22}" for name in [*DYNAMICS, "all"]))
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets:
            for rule in args.rules or RULES[net]:
                step = step_seconds(net, rule)
                epoch = step * args.steps_per_epoch
                seconds = record_seconds(net, rule, args.records, Path(tmp))
                base = seconds["none"]
                cost = {k: seconds[k] - base for k in SETTINGS if k != "none"}
                cells = "".join(
                    f" {cost[k]:9.3f} s ({100 * cost[k] / epoch:6.1f} %)"
                    for k in [*DYNAMICS, "all"]
                )
                print(f"{net:5} {rule:6} {1e3 * step:8.2f} {epoch:8.2f} {base:11.3f}" + cells)
                rows.append(
                    {
                        "net": net,
                        "rule": rule,
                        "step_seconds": step,
                        "epoch_seconds": epoch,
                        "record_seconds": seconds,
                        "marginal_seconds": cost,
                        "percent_of_epoch": {k: 100 * v / epoch for k, v in cost.items()},
                    }
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
