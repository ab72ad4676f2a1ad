"""Train one config for one seed into a run directory, resumably, with the recorder wired in.

A run directory holds ``config.yaml`` (the resolved config, one seed), ``record.zarr`` (the
recorder's Dataset), ``checkpoint.pt`` (latest checkpoint) and ``DONE`` once finished.
Launched by ``torchrun`` the same code trains data-parallel (see
:mod:`alignment.training.distributed`): rank 0 evaluates, records and checkpoints.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm

from alignment.config import Config, config_from_dict
from alignment.convert import convert
from alignment.data import load_dataset
from alignment.models import MODELS
from alignment.recording import Recorder, schedules
from alignment.training.batches import Batches, evaluate, stack_first
from alignment.training.checkpoint import load_checkpoint, save_checkpoint
from alignment.training.distributed import World, setup, wrap
from alignment.training.schedules import learning_rate, weight_decay

DONE = "DONE"


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the message names the step, the rule and the layers."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    final_accuracy: float
    best_accuracy: float
    steps: int


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return device


def build_model(config: Config, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    name = config.model.name
    if name == "mlp":
        model = MODELS[name](
            in_features=int(torch.tensor(input_shape).prod()),
            num_classes=num_classes,
            init=config.model.init,
        )
    elif name == "lenet":
        model = MODELS[name](
            in_channels=input_shape[0],
            num_classes=num_classes,
            input_size=input_shape[-1],
            init=config.model.init,
        )
    else:
        model = MODELS[name](num_classes=num_classes, init=config.model.init)
    return convert(model, config.rule_name, **config.rule_options)


def make_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, coupled L2) or Adam/AdamW over every parameter, learned feedback included.

    The fused implementation (one kernel per step) is used where torch has one: the same update
    as the default, 2-3x faster on CPU, which matters for PFA's R (k times W's size).
    """
    o = config.optim
    params = list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if o.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            nesterov=o.nesterov,
            fused=fused,
        )
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=fused)


def _divergence(model: nn.Module, config: Config, step: int, epoch: int, loss: float) -> str:
    bad = [
        name
        for name, p in model.named_parameters()
        if not torch.isfinite(p).all() or (p.grad is not None and not torch.isfinite(p.grad).all())
    ]
    layers = sorted({name.rsplit(".", 1)[0] for name in bad}) or ["(none: only the loss)"]
    return (
        f"training diverged at step {step} (epoch {epoch}): the loss is {loss} under rule "
        f"{config.rule_name!r} with lr {config.optim.lr}. Layers with non-finite weights or "
        f"gradients: {', '.join(layers)}. Lower the learning rate (--set optim.lr=...; the paper "
        "uses 0.001 for DFA on CIFAR-10) or the weight decay; the record up to this step is "
        "readable with alignment.open_run."
    )


def _record_schedules(config: Config, per_epoch: int) -> dict[str, schedules.Schedule]:
    """The recorder's schedules: main record, Jacobians, raw tensors."""
    record = config.record
    epoch_start = schedules.epoch_end(per_epoch)
    jacobian = (
        schedules.never
        if record.jacobian == "never"
        else epoch_start
        if record.jacobian == "epoch"
        else schedules.every(int(record.jacobian))
    )
    return {
        "schedule": schedules.every(record.every) | epoch_start,
        "jacobian_schedule": jacobian,
        "raw_schedule": epoch_start if record.raw_layers else schedules.never,
    }


def _recorder(config: Config, model, run_dir, probe, optimizer, seed, per_epoch, resume):
    record = config.record
    return Recorder(
        model,
        run_dir,
        probe=probe,
        loss_fn=F.cross_entropy,
        optimizer=optimizer,
        **_record_schedules(config, per_epoch),
        raw_layers=tuple(record.raw_layers),
        config=config.to_dict(),
        seed=seed,
        steps_per_epoch=per_epoch,
        flush_every=record.flush_every,
        resume=resume,
        min_records=0,  # the config sets the schedule; tiny test runs have few records
    )


def train_run(
    config: Config,
    run_dir: Path,
    seed: int,
    *,
    device: str | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> RunResult:
    """Train ``config`` with ``seed`` into ``run_dir`` (continuing its checkpoint if ``resume``)."""
    run_dir = Path(run_dir)
    world, device = setup(resolve_device(device or config.device))
    resume = bool(world.broadcast(resume))  # every rank follows rank 0's view of the directory
    if world.is_main:
        _prepare(run_dir, config, seed, resume)
    world.barrier()
    torch.manual_seed(seed)
    random.seed(seed)
    d = config.data
    splits = load_dataset(
        d.name,
        root=d.root,
        download=d.download,
        split_seed=d.split_seed,
        verify_checksums=d.verify_checksums,
        eval_split=d.eval_split,
    )
    model = build_model(config, splits.num_classes, splits.input_shape).to(device)
    optimizer = make_optimizer(config, model)
    batches = Batches(
        splits.train,
        d.batch_size,
        seed,
        limit=config.max_steps_per_epoch,
        num_workers=d.num_workers,
        rank=world.rank,
        world_size=world.size,
    )
    per_epoch, total = batches.per_epoch, config.epochs * batches.per_epoch
    probe = tuple(t.to(device) for t in stack_first(splits.eval, config.record.probe_size))
    recorder = _RankRecorder(
        _recorder(config, model, run_dir, probe, optimizer, seed, per_epoch, resume)
        if world.is_main
        else None,
        world,
        _record_schedules(config, per_epoch).values(),
    )
    start, accuracies = _restore(run_dir, model, optimizer, recorder) if resume else (0, [])
    net = wrap(model, world, device)  # DDP under torchrun, the model itself otherwise

    def save(next_step: int) -> None:
        if not world.is_main:
            return
        recorder.flush()
        save_checkpoint(
            run_dir,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "recorder": recorder.state_dict(),
                "step": next_step,
                "accuracies": accuracies,
            },
        )

    bar = tqdm(
        total=total,
        initial=start,
        disable=quiet or not world.is_main,
        desc=f"{config.rule_name} seed {seed}",
    )
    step = start
    try:
        for epoch in range(start // per_epoch, config.epochs + 1):
            first = start % per_epoch if epoch == start // per_epoch else 0
            data = batches.epoch(epoch, first) if epoch < config.epochs else batches.epoch(0)
            for i, (x, y) in enumerate(data, start=first):
                step = epoch * per_epoch + i
                _schedule(optimizer, config, epoch, step, per_epoch)
                x, y = x.to(device), y.to(device)
                scalars = {}
                if i == 0 and world.is_main:  # epoch start, and once after training: evaluate
                    accuracies.append(evaluate(model, splits.eval, d.eval_batch_size, device))
                    scalars["test_accuracy"] = accuracies[-1]
                recorder.step(x, y, step=step, epoch=epoch, **scalars)
                if epoch == config.epochs:
                    break
                loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                loss = world.mean(loss.detach())  # the global batch's loss
                value = loss.item()
                if not torch.isfinite(loss):  # every rank sees the same mean, so all stop
                    raise DivergenceError(_divergence(model, config, step, epoch, value))
                optimizer.step()
                bar.update()
                if world.is_main:
                    bar.set_postfix(loss=f"{value:.3f}", acc=f"{accuracies[-1]:.3f}")
                if (step + 1) % per_epoch == 0 or (
                    config.checkpoint_every and (step + 1) % config.checkpoint_every == 0
                ):
                    save(step + 1)
    finally:
        bar.close()
        recorder.close()
    accuracies = world.broadcast(accuracies)
    result = RunResult(run_dir, accuracies[-1], max(accuracies), total)
    if world.is_main:
        done = {"final_accuracy": accuracies[-1], "best_accuracy": max(accuracies), "steps": total}
        (run_dir / DONE).write_text(json.dumps(done))
    world.barrier()
    return result


def _restore(run_dir: Path, model, optimizer, recorder) -> tuple[int, list[float]]:
    """Load ``run_dir``'s checkpoint (on every rank: rank 0's); the step and accuracies so far."""
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        return 0, []
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["torch_rng"])
    random.setstate(checkpoint["python_rng"])
    recorder.load_state_dict(checkpoint["recorder"])
    return checkpoint["step"], list(checkpoint["accuracies"])


def _prepare(run_dir: Path, config: Config, seed: int, resume: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:  # from step 0: what an earlier attempt left before its first checkpoint goes
        shutil.rmtree(run_dir / "record.zarr", ignore_errors=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**config.to_dict(), "seeds": [seed]}))


def _schedule(optimizer, config: Config, epoch: int, step: int, per_epoch: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config.optim.lr, config.lr_schedule, epoch, config.epochs)
        group["weight_decay"] = weight_decay(
            config.optim.weight_decay, config.wd_schedule, step, per_epoch
        )


class _RankRecorder:
    """The recorder as every rank sees it: rank 0 records, on the global batch (gathered from
    all ranks at the steps its schedules record, as a single process would see it); the other
    ranks only take part in the gather."""

    def __init__(self, recorder: Recorder | None, world: World, schedule_list) -> None:
        self.recorder, self.world = recorder, world
        self.recorded = schedules.never
        for schedule in schedule_list:
            self.recorded = self.recorded | schedule

    def step(self, x: torch.Tensor, y: torch.Tensor, *, step: int, epoch: int, **scalars) -> None:
        if self.world.distributed and self.recorded(step):
            x, y = self.world.gather(x), self.world.gather(y)
        if self.recorder is not None:
            self.recorder.step(x, y, step=step, epoch=epoch, **scalars)

    def flush(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def state_dict(self) -> dict:
        return self.recorder.state_dict() if self.recorder is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.recorder is not None:
            self.recorder.load_state_dict(state)


def run_dirs(out: Path, seeds: list[int]) -> list[Path]:
    return [Path(out) / f"seed{seed}" for seed in seeds]


def train(
    config: Config,
    out: Path,
    *,
    seeds: list[int] | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> list[RunResult]:
    """Train every seed of ``config`` into ``out/seed<N>``; finished runs are skipped, interrupted
    ones resumed."""
    seeds = config.seeds if seeds is None else seeds
    results = []
    for seed, run_dir in zip(seeds, run_dirs(out, seeds), strict=True):
        done = run_dir / DONE
        if done.exists():
            info = json.loads(done.read_text())
            results.append(
                RunResult(run_dir, info["final_accuracy"], info["best_accuracy"], info["steps"])
            )
            continue
        resume = (run_dir / "checkpoint.pt").exists()
        results.append(train_run(config, run_dir, seed, device=device, quiet=quiet, resume=resume))
    return results


def resume(run_dir: Path, *, device: str | None = None, quiet: bool = False) -> RunResult:
    """Continue an interrupted run from its last checkpoint (or start it if it has none)."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    config = config_from_dict(yaml.safe_load(config_file.read_text()), str(config_file))
    if (run_dir / DONE).exists():
        info = json.loads((run_dir / DONE).read_text())
        return RunResult(run_dir, info["final_accuracy"], info["best_accuracy"], info["steps"])
    has_checkpoint = (run_dir / "checkpoint.pt").exists()
    return train_run(
        config, run_dir, config.seeds[0], device=device, quiet=quiet, resume=has_checkpoint
    )
