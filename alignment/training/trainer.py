"""Train one config for one seed into a run directory, resumably, with the recorder wired in.

A run directory holds ``config.yaml`` (the resolved config, one seed), ``record.zarr`` (the
recorder's Dataset), ``checkpoint.pt`` (latest checkpoint), ``.lock`` (held by the process
training it, see :mod:`alignment.runlock`) and ``DONE`` once finished. ``DONE`` is
written only by the lock's holder after a complete run; a run is continued only under the config
it was started with (:mod:`alignment.training.runconfig`) and from a checkpoint that fits it.
Launched by ``torchrun`` the same code trains data-parallel (see
:mod:`alignment.training.distributed`): every rank evaluates its shard, rank 0 records and
checkpoints.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from alignment.config import Config, ConfigError
from alignment.convert import convert
from alignment.data import load_dataset
from alignment.models import MODELS
from alignment.recording import Recorder, schedules
from alignment.recording.tensorboard import TensorBoardSink
from alignment.runlock import hold_run
from alignment.training.amp import Precision, compiled
from alignment.training.batches import Batches, Evaluation, stack_first
from alignment.training.checkpoint import (
    CHECKPOINT,
    CheckpointError,
    check_checkpoint,
    checkpoint_fix,
    load_checkpoint,
    save_checkpoint,
)
from alignment.training.distributed import World, setup, wrap
from alignment.training.preflight import preflight
from alignment.training.progress import ProgressOptions, progress_display
from alignment.training.runconfig import (
    ABSENT,
    check_run_config,
    describe,
    differences,
    read_run_config,
    run_config,
)
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
    already_finished: bool = False
    """True if the run was finished before this call (nothing was trained)."""


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` if available, else ``cpu``; ``cuda`` without CUDA is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available on this machine (torch "
            f"{torch.__version__}, no GPU found): use --device cpu (or --set device=cpu, or "
            "device: auto in the config)"
        )
    return device


def build_model(config: Config, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    name = config.model.name
    if name == "mlp":
        model = MODELS[name](
            in_features=math.prod(input_shape),
            num_classes=num_classes,
            init=config.model.init,
        )
    elif name == "vit":
        model = MODELS[name](
            in_channels=input_shape[0],
            image_size=input_shape[-1],
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
        dynamics=record.dynamics,
        sinks=[TensorBoardSink(Path(run_dir) / "tensorboard")] if record.tensorboard else [],
    )


def train_run(
    config: Config,
    run_dir: Path,
    seed: int,
    *,
    device: str | None = None,
    quiet: bool = False,
    resume: bool = False,
    progress: ProgressOptions | None = None,
) -> RunResult:
    """Train ``config`` with ``seed`` into ``run_dir`` (continuing its checkpoint if ``resume``).

    Holds ``run_dir``'s lock throughout (:class:`~alignment.runlock.RunLockedError` if
    another process holds it). Without ``resume`` the run starts afresh (what the folder held
    goes); with it, the folder's config and checkpoint must fit ``config``
    (:class:`~alignment.config.ConfigError`, :class:`~alignment.training.checkpoint.
    CheckpointError`). ``progress``: how progress shows (:mod:`alignment.training.progress`;
    default: a bar on a terminal, else lines); ``quiet``: none.
    """
    run_dir = Path(run_dir)
    shown = ProgressOptions("off") if quiet else progress or ProgressOptions()
    world, device = setup(resolve_device(device or config.device))
    with hold_run(run_dir, world):
        return _train_locked(config, run_dir, seed, world, device, shown, resume)


def _agree(world: World, action) -> None:
    """Run ``action`` on rank 0; every rank raises the exception it raised (so all stop)."""
    error = None
    if world.is_main:
        try:
            action()
        except Exception as raised:
            error = raised
    error = world.broadcast(error)
    if error is not None:
        raise error


def _train_locked(
    config: Config,
    run_dir: Path,
    seed: int,
    world: World,
    device: str,
    shown: ProgressOptions,
    resume: bool,
) -> RunResult:
    resume = bool(world.broadcast(resume))  # every rank follows rank 0's view of the directory
    d = config.data
    splits = load_dataset(
        d.name,
        root=d.root,
        download=d.download,
        split_seed=d.split_seed,
        verify_checksums=d.verify_checksums,
        eval_split=d.eval_split,
    )
    # Does the model take the data and fit in memory? Checked before anything is written.
    preflight(config, splits.input_shape, splits.num_classes, device)
    _agree(world, lambda: _prepare(run_dir, config, seed, resume))
    torch.manual_seed(seed)
    random.seed(seed)
    model = build_model(config, splits.num_classes, splits.input_shape).to(device)
    optimizer = make_optimizer(config, model)
    precision = Precision(config.amp, device)
    batches = Batches(
        splits.train,
        d.batch_size,
        seed,
        limit=config.max_steps_per_epoch,
        num_workers=d.num_workers,
        rank=world.rank,
        world_size=world.size,
        pin_memory=device.startswith("cuda"),
    )
    evaluation = Evaluation(
        splits.eval,
        d.eval_batch_size,
        num_workers=d.num_workers,
        pin_memory=device.startswith("cuda"),
        world=world,
    )
    per_epoch, total = batches.per_epoch, config.epochs * batches.per_epoch
    # Every rank reads (rank 0's) checkpoint, and checks it before the record is touched.
    state = _checked_checkpoint(run_dir, model, config, seed, total, per_epoch) if resume else None
    probe = tuple(t.to(device) for t in stack_first(splits.eval, config.record.probe_size))
    recorder = _RankRecorder(
        _recorder(config, model, run_dir, probe, optimizer, seed, per_epoch, resume)
        if world.is_main
        else None,
        world,
        _record_schedules(config, per_epoch).values(),
    )
    start, accuracies = _continue(state, run_dir, world, model, optimizer, recorder, config, seed)
    precision.load_state_dict(state)
    net = compiled(wrap(model, world, device), config)  # DDP under torchrun, else the model

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
                "rule": config.rule_name,
                "config": run_config(config, seed),
                **precision.state_dict(),
            },
        )

    bar = progress_display(
        shown if world.is_main else ProgressOptions("off"),
        total=total,
        initial=start,
        per_epoch=per_epoch,
        label=f"{config.rule_name} seed {seed}",
        every=config.progress_every,
    )
    step = start
    try:
        for epoch in range(start // per_epoch, config.epochs + 1):
            first = start % per_epoch if epoch == start // per_epoch else 0
            data = batches.epoch(epoch, first) if epoch < config.epochs else batches.epoch(0)
            for i, (x, y) in enumerate(data, start=first):
                step = epoch * per_epoch + i
                _schedule(optimizer, config, epoch, step, per_epoch)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                scalars = {}
                if i == 0:  # epoch start, and once after training: every rank evaluates
                    accuracies.append(evaluation.accuracy(model, device))
                    scalars["test_accuracy"] = accuracies[-1]
                    if epoch > 0:
                        bar.epoch_end(epoch - 1, accuracies[-1])
                recorder.step(x, y, step=step, epoch=epoch, **scalars)
                if epoch == config.epochs:
                    break
                with precision.autocast():
                    loss = F.cross_entropy(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                precision.backward(loss)
                loss = world.mean(loss.detach())  # the global batch's loss
                value = loss.item()
                if not torch.isfinite(loss):  # every rank sees the same mean, so all stop
                    raise DivergenceError(_divergence(model, config, step, epoch, value))
                precision.step(optimizer)
                bar.update(value, accuracies[-1])
                if (step + 1) % per_epoch == 0 or (
                    config.checkpoint_every and (step + 1) % config.checkpoint_every == 0
                ):
                    save(step + 1)
    finally:
        bar.close()
        recorder.close()
        batches.close()
        evaluation.close()
    accuracies = world.broadcast(accuracies)
    result = RunResult(run_dir, accuracies[-1], max(accuracies), total)
    if world.is_main:  # the lock's holder, after a complete run
        done = {"final_accuracy": accuracies[-1], "best_accuracy": max(accuracies), "steps": total}
        (run_dir / DONE).write_text(json.dumps(done))
    world.barrier()
    return result


def _checked_checkpoint(
    run_dir: Path, model: nn.Module, config: Config, seed: int, total: int, per_epoch: int
) -> dict | None:
    """``run_dir``'s checkpoint, checked against the model and the config (None if none)."""
    state = load_checkpoint(run_dir)
    if state is not None:
        check_checkpoint(
            state,
            run_dir / CHECKPOINT,
            model=model.state_dict(),
            config=run_config(config, seed),
            rule=config.rule_name,
            total=total,
            per_epoch=per_epoch,
        )
    return state


def _continue(
    state: dict | None,
    run_dir: Path,
    world: World,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    recorder: _RankRecorder,
    config: Config,
    seed: int,
) -> tuple[int, list[float]]:
    """The step and the accuracies so far: from the checkpoint ``state`` (after checking the
    record against it), or from scratch."""
    if state is None:
        return 0, []
    _agree(world, lambda: _check_record(recorder.recorder, state, config, seed))
    return _restore(state, run_dir / CHECKPOINT, model, optimizer, recorder)


def _restore(state: dict, path: Path, model, optimizer, recorder) -> tuple[int, list[float]]:
    """Continue from a checked checkpoint ``state`` (on every rank: rank 0's); the step and the
    accuracies so far."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = (str(error).splitlines() or [""])[0]
        raise CheckpointError(
            f"{path} does not fit this run ({type(error).__name__}: {reason}): "
            f"{checkpoint_fix(path)}"
        ) from None
    recorder.load_state_dict(state["recorder"])
    return state["step"], list(state["accuracies"])


def _check_record(recorder: Recorder, state: dict, config: Config, seed: int) -> None:
    """Refuse to continue a record that was started under another config (checkpoints from
    before they named their config). A record that lacks steps the checkpoint saw recorded is
    refused by the recorder itself (:func:`alignment.recording.integrity.check_checkpoint`)."""
    store = recorder.store
    checkpoint = recorder.run_dir / CHECKPOINT
    if not store.exists():
        return
    stored = store.read_static().attrs.get("config")
    if stored:
        diffs = [
            d
            for d in differences(json.loads(stored), run_config(config, seed))
            if d[0] != "seeds" and d[1] is not ABSENT
        ]
        if diffs:
            raise ConfigError(
                f"{store.root} was recorded under another config: "
                f"{describe(diffs, 'in the record', 'now')}. Continuing it would mix two "
                f"experiments: {checkpoint_fix(checkpoint)}"
            )


def _prepare(run_dir: Path, config: Config, seed: int, resume: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        check_run_config(run_dir, config, seed)
        return
    # From step 0: what an earlier attempt left goes, DONE first (it must never describe a
    # record that is being rewritten).
    for name in (DONE, CHECKPOINT, CHECKPOINT + ".tmp"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "record.zarr", ignore_errors=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run_config(config, seed)))


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
    progress: ProgressOptions | None = None,
) -> list[RunResult]:
    """Train every seed of ``config`` into ``out/seed<N>``; finished runs are skipped, interrupted
    ones resumed. A run folder that holds another config (fields in
    :data:`~alignment.training.runconfig.NON_IDENTITY` aside) is refused, finished or not."""
    seeds = config.seeds if seeds is None else seeds
    world, _ = setup(resolve_device(device or config.device))
    results = []
    for seed, run_dir in zip(seeds, run_dirs(out, seeds), strict=True):
        with hold_run(run_dir, world):
            _agree(world, lambda: check_run_config(run_dir, config, seed))  # noqa: B023
            result = finished(run_dir)
            if result is None:
                resume = (run_dir / CHECKPOINT).exists()
                result = train_run(
                    config,
                    run_dir,
                    seed,
                    device=device,
                    quiet=quiet,
                    resume=resume,
                    progress=progress,
                )
        results.append(result)
    return results


def finished(run_dir: Path) -> RunResult | None:
    """The result ``run_dir/DONE`` records (None if the run is not done)."""
    done = Path(run_dir) / DONE
    if not done.exists():
        return None
    try:
        info = json.loads(done.read_text())
        return RunResult(run_dir, info["final_accuracy"], info["best_accuracy"], info["steps"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{done} is damaged ({type(error).__name__}: {error}); delete it and run "
            f"`alignment resume {run_dir}` to finish the run from its checkpoint"
        ) from None


def resume(
    run_dir: Path,
    *,
    device: str | None = None,
    quiet: bool = False,
    progress: ProgressOptions | None = None,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint (or start it if it has none)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    world, _ = setup(resolve_device(device or config.device))
    with hold_run(run_dir, world):  # every rank decides under rank 0's lock, together
        result = world.broadcast(finished(run_dir))
        if result is not None:
            return replace(result, already_finished=True)
        has_checkpoint = (run_dir / CHECKPOINT).exists()
        return train_run(
            config,
            run_dir,
            config.seeds[0],
            device=device,
            quiet=quiet,
            resume=has_checkpoint,
            progress=progress,
        )
