"""The :class:`Recorder`: alignment quantities of a converted model inside any training loop.

>>> rec = Recorder(model, "runs/fa-0", probe=(x_probe, y_probe), optimizer=opt)  # doctest: +SKIP
>>> for step, (x, y) in enumerate(loader):                                       # doctest: +SKIP
...     rec.step(x, y)              # before the forward of this step
...     loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
>>> rec.close()                                                                  # doctest: +SKIP

``step`` costs one call of each schedule on steps that record nothing. On a recorded step it
measures the model at the weights the step's update is computed at, through its own passes (see
:mod:`alignment.recording.context`), which leave the training untouched: no ``.grad``, no
BatchNorm statistics, no optimizer state and no random numbers of the training are consumed, so a
run with the recorder is bitwise the run without it.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor, nn

from alignment.recording import schedules as sched
from alignment.recording.context import LossFn, Network, StepContext
from alignment.recording.integrity import check_checkpoint, check_resumable
from alignment.recording.quantities import QUANTITIES, raw
from alignment.recording.quantities.network import SCALARS
from alignment.recording.schema import (
    PROBE_INPUT,
    PROBE_INPUT_DIMS,
    RAW_EPOCH,
    RAW_QUANTITIES,
    RAW_STEP,
    VARIABLES,
    validate,
)
from alignment.recording.store import KINDS, SegmentStore

DEFAULT_EVERY = 200
"""Main-schedule interval when none is given. With it (and Jacobians every epoch end, probe of 32)
benchmarks/recorder_overhead.py measured 1–7 % overhead on the MNIST MLP and 2–3 % on ResNet-20
(CPU, one thread), with full-run projections of 3–5 %."""

DEFAULT_PROBE_SIZE = 32
"""Samples of the first training batch kept as the probe when no probe is given."""

RAW_FLUSH_BYTES = 64 * 2**20
"""Raw records are flushed as soon as this much is buffered, whatever ``flush_every`` says."""


def default_schedule(steps_per_epoch: int | None = None) -> sched.Schedule:
    """``every(200)``, plus every epoch end when the number of steps per epoch is known."""
    base = sched.every(DEFAULT_EVERY)
    return base | sched.epoch_end(steps_per_epoch) if steps_per_epoch else base


def default_jacobian_schedule(steps_per_epoch: int | None = None) -> sched.Schedule:
    """Every epoch end when the number of steps per epoch is known, else every 1000 steps."""
    return sched.epoch_end(steps_per_epoch) if steps_per_epoch else sched.every(1000)


def git_sha() -> str:
    """``git rev-parse HEAD`` of the repository holding the alignment package, or 'unknown'."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


@dataclass
class _Record:
    step: int
    epoch: int
    values: dict[str, Any] = field(default_factory=dict)


def _as_schedule(value: object, name: str) -> sched.Schedule:
    if isinstance(value, sched.Schedule):
        return value
    if callable(value):
        return sched.Function(value)
    raise TypeError(f"Recorder: {name} must be a callable step -> bool, got {type(value).__name__}")


class Recorder:
    """Records the alignment quantities of a converted model into ``run_dir``.

    Args:
        model: a model converted with :func:`alignment.convert` (not modified in any way).
        run_dir: the run directory; the record goes to ``run_dir/record.zarr``.
        probe: a fixed ``(x, y)`` batch for the per-sample quantities and the Jacobians (kept in
            the record); default: the first ``DEFAULT_PROBE_SIZE`` samples of the first batch.
        loss_fn: ``loss_fn(logits, y)``, the training loss.
        optimizer: read for ``lr`` and ``weight_decay`` (first parameter group).
        schedule: steps with a record (default: :func:`default_schedule`).
        jacobian_schedule: steps that also record the Jacobian quantities
            (default: :func:`default_jacobian_schedule`).
        raw_schedule: steps that record the raw tensors of ``raw_layers`` (default: the Jacobian
            schedule when ``raw_layers`` is given, else never).
        raw_layers: module names of converted layers whose raw tensors to keep, or ``"all"``.
        config: the run's config (stored as JSON); seed: the run's seed (-1 if unknown).
        steps_per_epoch: for the epoch coordinate and the default schedules.
        flush_every: records buffered before they are written (a crash loses at most these).
        resume: continue the record in ``run_dir`` (then call :meth:`load_state_dict`).
    """

    def __init__(
        self,
        model: nn.Module,
        run_dir: str | Path,
        *,
        probe: tuple[Tensor, Tensor] | None = None,
        loss_fn: LossFn = F.cross_entropy,
        optimizer: torch.optim.Optimizer | None = None,
        schedule: Callable[[int], bool] | None = None,
        jacobian_schedule: Callable[[int], bool] | None = None,
        raw_schedule: Callable[[int], bool] | None = None,
        raw_layers: Iterable[str] | str = (),
        config: dict | None = None,
        seed: int | None = None,
        steps_per_epoch: int | None = None,
        flush_every: int = 10,
        resume: bool = False,
    ) -> None:
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise ValueError(f"Recorder: flush_every must be an int ≥ 1, got {flush_every!r}")
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool)
            or not isinstance(steps_per_epoch, int)
            or steps_per_epoch < 1
        ):
            raise ValueError(
                f"Recorder: steps_per_epoch must be a positive int, got {steps_per_epoch!r}"
            )
        self.model = model
        self.run_dir = Path(run_dir)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.steps_per_epoch = steps_per_epoch
        self.flush_every = flush_every
        self.config = {} if config is None else config
        self.seed = -1 if seed is None else int(seed)
        self.raw_layers: tuple[str, ...] | str = "all" if raw_layers == "all" else tuple(raw_layers)
        self.schedule = _as_schedule(
            default_schedule(steps_per_epoch) if schedule is None else schedule, "schedule"
        )
        self.jacobian_schedule = _as_schedule(
            default_jacobian_schedule(steps_per_epoch)
            if jacobian_schedule is None
            else jacobian_schedule,
            "jacobian_schedule",
        )
        if raw_schedule is None:
            raw_schedule = self.jacobian_schedule if self.raw_layers else sched.never
        self.raw_schedule = _as_schedule(raw_schedule, "raw_schedule")
        self.store = SegmentStore(self.run_dir)
        self.net: Network | None = None
        self.probe: tuple[Tensor, Tensor] | None = None
        self._buffer: list[_Record] = []
        self._raw_buffer: list[_Record] = []
        self._raw_bytes = 0
        self._next_step = 0
        self._last_recorded = -1
        self._epoch: int | None = None
        self._closed = False
        self._quantities: dict[str, list] = {}
        if self.store.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.run_dir} already holds a record ({self.store.root}); pass "
                    "resume=True to continue it, or use a new run directory"
                )
            self._resume()
        elif resume and any(self.store.entries(kind) for kind in KINDS):
            check_resumable(self.store)  # records whose static part is gone: refused
        elif probe is not None:
            self._setup(*probe)

    # ------------------------------------------------------------------ setup
    def _setup(self, x_probe: Tensor, y_probe: Tensor, *, write: bool = True) -> None:
        if x_probe.shape[0] != y_probe.shape[0]:
            raise ValueError(
                f"Recorder: the probe has {x_probe.shape[0]} inputs but {y_probe.shape[0]} labels"
            )
        weight = next(self.model.parameters())
        x_probe = x_probe.detach().to(weight.device)
        if torch.is_floating_point(x_probe):
            x_probe = x_probe.to(weight.dtype)
        y_probe = y_probe.detach().to(weight.device)
        self.probe = (x_probe, y_probe)
        self.net = Network(self.model, x_probe)
        if self.raw_layers == "all":
            self.raw_layers = tuple(self.net.names)
        unknown = [name for name in self.raw_layers if name not in self.net.layers]
        if unknown:
            raise ValueError(
                f"Recorder: raw_layers {unknown} are not converted layers of the model; "
                f"valid names: {', '.join(self.net.names)}"
            )
        self._quantities = {
            when: [q for q in QUANTITIES if q.when == when and q.applies(self.net)]
            for when in ("main", "jacobian", "static")
        }
        if write:
            self.store.hold_writer()
            self.store.create()
            self.store.write_static(self._static())

    def _rule_attrs(self) -> tuple[str, str]:
        rules = [layer.rule for layer in self.net.layers.values()]
        names = list(dict.fromkeys(rule.name for rule in rules))
        if len(set(rules)) == 1:
            return names[0], json.dumps(rules[0].options(), sort_keys=True)
        options = {n: layer.rule.options() for n, layer in self.net.layers.items()}
        return "+".join(names), json.dumps(options, sort_keys=True)

    def attrs(self) -> dict[str, Any]:
        """The run attrs written once into the record."""
        from alignment import __version__

        rule, options = self._rule_attrs()
        return {
            "config": json.dumps(self.config, sort_keys=True, default=str),
            "rule": rule,
            "rule_options": options,
            "seed": self.seed,
            "alignment_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "git_sha": git_sha(),
            "start_time": datetime.now(UTC).isoformat(timespec="seconds"),
            "steps_per_epoch": self.steps_per_epoch or -1,
            "schedule": repr(self.schedule),
            "jacobian_schedule": repr(self.jacobian_schedule),
            "raw_schedule": repr(self.raw_schedule),
            "raw_layers": json.dumps(list(self.raw_layers)),
            "loss_fn": getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__),
        }

    def _static(self) -> xr.Dataset:
        x_probe, y_probe = self.probe
        ds = xr.Dataset(coords={"layer": np.array(self.net.names, dtype=object)})
        dims = PROBE_INPUT_DIMS.get(x_probe.dim())
        if dims is not None:
            ds["probe_input"] = xr.Variable(dims, x_probe.cpu().numpy(), PROBE_INPUT.attrs)
        if y_probe.dim() == 1:
            ds["probe_label"] = xr.Variable(
                ("sample",), y_probe.cpu().numpy(), VARIABLES["probe_label"].attrs
            )
        for quantity in self._quantities["static"]:
            ctx = StepContext(self.net, x_probe, y_probe, self.loss_fn, self.probe)
            for name, values in quantity.compute(ctx).items():
                ds[name] = xr.Variable(VARIABLES[name].dims, values, VARIABLES[name].attrs)
        ds.attrs = self.attrs()
        return validate(ds)

    def _resume(self) -> None:
        self.store.hold_writer()  # first: no other writer may be cleaning or appending
        self.store.clean()
        check_resumable(self.store)  # a damaged record or one with gaps is refused, not continued
        static = self.store.read_static()
        if "probe_input" not in static or "probe_label" not in static:
            raise ValueError(f"cannot resume {self.run_dir}: its record holds no probe batch")
        probe = (
            torch.from_numpy(static["probe_input"].values.copy()),
            torch.from_numpy(static["probe_label"].values.copy()),
        )
        self._setup(*probe, write=False)
        stored = [str(name) for name in static["layer"].values]
        if stored != self.net.names:
            raise ValueError(
                f"cannot resume {self.run_dir}: it records layers {stored}, the model has "
                f"{self.net.names}"
            )
        for kind in KINDS:
            self.store.compact(kind)
        last = self.store.last_step("main")
        last_raw = self.store.last_step("raw")
        self._last_recorded = max(
            -1 if last is None else last, -1 if last_raw is None else last_raw
        )
        self._next_step = self._last_recorded + 1
        self.store.reopen()  # continued: no longer finished

    # ------------------------------------------------------------------ recording
    def _epoch_of(self, step: int, epoch: int | None) -> int:
        if epoch is not None:
            self._epoch = int(epoch)
            return self._epoch
        if self.steps_per_epoch:
            return step // self.steps_per_epoch
        return 0 if self._epoch is None else self._epoch

    def step(
        self,
        x: Tensor,
        y: Tensor,
        *,
        step: int | None = None,
        epoch: int | None = None,
        **scalars: float,
    ) -> bool:
        """Record step ``step`` (default: the previous one + 1) if a schedule says so.

        Call it once per training step *before* that step's forward: the record is of the
        weights the step's update is computed at, on the batch ``(x, y)``. Keyword scalars
        (``test_accuracy``, ``test_loss``, ``val_accuracy``, ``val_loss``) are stored and force a
        record at this step. Returns whether the step was recorded.
        """
        s = self._next_step if step is None else int(step)
        self._next_step = s + 1
        main, jacobian, raw_step = self._plan(s, scalars)
        if not (main or raw_step):
            if epoch is not None:
                self._epoch = int(epoch)
            return False
        epoch_value = self._epoch_of(s, epoch)
        if self.net is None:
            self._setup(x[:DEFAULT_PROBE_SIZE], y[:DEFAULT_PROBE_SIZE])
        ctx = StepContext(self.net, x, y, self.loss_fn, self.probe, self.optimizer)
        if main:
            whens = ("main", "jacobian") if jacobian else ("main",)
            values: dict[str, Any] = {}
            for quantity in (q for when in whens for q in self._quantities[when]):
                values.update(quantity.compute(ctx))
            values.update({name: np.float64(value) for name, value in scalars.items()})
            self._buffer.append(_Record(s, epoch_value, values))
        if raw_step:
            values = raw.compute(ctx, self.raw_layers)
            self._raw_buffer.append(_Record(s, epoch_value, values))
            self._raw_bytes += sum(data.nbytes for _, data in values.values())
        self._last_recorded = s
        full = max(len(self._buffer), len(self._raw_buffer)) >= self.flush_every
        if full or self._raw_bytes >= RAW_FLUSH_BYTES:
            self.flush()
        return True

    def _plan(self, s: int, scalars: dict[str, float]) -> tuple[bool, bool, bool]:
        """(main record, Jacobians, raw tensors) at step ``s``; checks the call."""
        if scalars:
            unknown = sorted(set(scalars) - set(SCALARS))
            if unknown:
                raise ValueError(
                    f"Recorder.step: unknown scalar(s) {', '.join(unknown)}; accepted: "
                    f"{', '.join(SCALARS)}"
                )
        jacobian = self.jacobian_schedule(s)
        raw_step = bool(self.raw_layers) and self.raw_schedule(s)
        main = jacobian or bool(scalars) or self.schedule(s)
        if main or raw_step:
            if self._closed:
                raise RuntimeError("Recorder.step after close()")
            if s <= self._last_recorded:
                raise ValueError(
                    f"Recorder.step: step {s} is not after the last recorded step "
                    f"{self._last_recorded}; steps must increase (to replay after a checkpoint, "
                    "resume with load_state_dict)"
                )
        return main, jacobian, raw_step

    # ------------------------------------------------------------------ storage
    def _main_segment(self, records: list[_Record]) -> xr.Dataset:
        names = list(dict.fromkeys(name for r in records for name in r.values))
        data_vars = {}
        for name in names:
            var = VARIABLES[name]
            shape = next(np.shape(r.values[name]) for r in records if name in r.values)
            stacked = np.full((len(records), *shape), math.nan)
            for i, record in enumerate(records):
                if name in record.values:
                    stacked[i] = record.values[name]
            data_vars[name] = xr.Variable(var.dims, stacked, var.attrs)
        coords = {
            "step": np.array([r.step for r in records], dtype=np.int64),
            "epoch": ("step", np.array([r.epoch for r in records], dtype=np.int64)),
            "layer": np.array(self.net.names, dtype=object),
        }
        return xr.Dataset(data_vars, coords)

    def _raw_segment(self, records: list[_Record]) -> xr.Dataset:
        names = list(dict.fromkeys(name for r in records for name in r.values))
        data_vars = {}
        for name in names:
            dims, first = next(r.values[name] for r in records if name in r.values)
            stacked = np.full((len(records), *first.shape), math.nan, dtype=first.dtype)
            for i, record in enumerate(records):
                if name in record.values:
                    stacked[i] = record.values[name][1]
            quantity, _, layer = name.partition("__")
            data_vars[name] = xr.Variable(
                (RAW_STEP, *dims), stacked, RAW_QUANTITIES[quantity].attrs(layer)
            )
        coords = {
            RAW_STEP: np.array([r.step for r in records], dtype=np.int64),
            RAW_EPOCH: (RAW_STEP, np.array([r.epoch for r in records], dtype=np.int64)),
        }
        return xr.Dataset(data_vars, coords)

    def flush(self) -> None:
        """Write the buffered records as new segments (atomically; see :mod:`.store`)."""
        if self._buffer:
            segment = self._main_segment(self._buffer)
            self.store.append("main", validate(segment, attrs=False))
            self._buffer = []
        if self._raw_buffer:
            segment = self._raw_segment(self._raw_buffer)
            self.store.append("raw", validate(segment, attrs=False))
            self._raw_buffer, self._raw_bytes = [], 0

    def close(self) -> None:
        """Flush, then compact the record into one segment per log; mark it finished (file
        the record closed) unless an exception is propagating. Idempotent."""
        if self._closed:
            return
        self.flush()
        if self.net is not None:
            for kind in KINDS:
                self.store.compact(kind)
            if sys.exc_info()[0] is None:  # not closed by an exception (with-block, finally)
                self.store.mark_closed()
            self.store.release_writer()
        self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the record: flushes, then the next step."""
        self.flush()
        return {"step": self._next_step, "epoch": self._epoch, "last_recorded": self._last_recorded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: records at steps ≥ ``state['step']`` are dropped, so that
        replaying the steps from the checkpoint gives the record of an uninterrupted run."""
        stop = int(state["step"])
        check_checkpoint(self.store, state)  # the record must hold what the checkpoint saw
        self._buffer = [r for r in self._buffer if r.step < stop]
        self._raw_buffer = [r for r in self._raw_buffer if r.step < stop]
        self._raw_bytes = sum(
            data.nbytes for r in self._raw_buffer for _, data in r.values.values()
        )
        for kind in KINDS:
            last = self.store.last_step(kind) if self.store.exists() else None
            if last is not None and last >= stop:
                self.store.truncate(kind, stop)
        self._next_step = stop
        self._last_recorded = min(self._last_recorded, stop - 1)
        self._epoch = state.get("epoch")

    def __repr__(self) -> str:
        layers = "?" if self.net is None else len(self.net.names)
        return (
            f"Recorder({self.run_dir}, layers={layers}, schedule={self.schedule!r}, "
            f"jacobian_schedule={self.jacobian_schedule!r}, next_step={self._next_step})"
        )
