"""The :class:`Recorder`: alignment quantities of a converted model inside any training loop.

>>> rec = Recorder(model, "runs/fa-0", probe=(x_probe, y_probe), optimizer=opt)  # doctest: +SKIP
>>> for step, (x, y) in enumerate(loader):                                       # doctest: +SKIP
...     rec.step(x, y)              # before the forward of this step
...     loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
>>> rec.close()                                                                  # doctest: +SKIP

``rec.log(test_accuracy=0.93, my_metric=1.2)`` stores test accuracy or any scalar of the loop
(:meth:`Recorder.log`); ``close()`` records the final weights (:meth:`Recorder.close`).

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
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
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
from alignment.recording.decay import ResidualDecay
from alignment.recording.integrity import check_checkpoint, check_resumable
from alignment.recording.quantities import OPT_IN, QUANTITIES, SELECTABLE, raw
from alignment.recording.quantities.layers import layer_coords
from alignment.recording.quantities.network import SCALARS
from alignment.recording.schema import (
    DYNAMICS,
    MAX_FEATURES,
    MAX_RANK,
    PROBE_INPUT,
    PROBE_INPUT_DIMS,
    RAW_EPOCH,
    RAW_QUANTITIES,
    RAW_STEP,
    VARIABLES,
    Variable,
    check_tags,
    user_variable,
    validate,
)
from alignment.recording.sinks import Record, Sink, SinkDispatcher
from alignment.recording.store import KINDS, SegmentStore

DEFAULT_EVERY = 200
"""Main-schedule interval when none is given. With it (and Jacobians every epoch end, probe of 32)
benchmarks/recorder_overhead.py measured 1–7 % overhead on the MNIST MLP and 2–3 % on ResNet-20
(CPU, one thread), with full-run projections of 3–5 %."""

DEFAULT_PER_DECADE = 5
"""Log-spaced records per decade of steps when the run length is unknown (no steps_per_epoch):
steps 0, 1, 2, 3, 4, 6, 10, 16, 25, 40, 63, 100, 158, …, so a 126-step run gets 12 records plus
the final one, and a 10⁴-step run 21 plus ``every(DEFAULT_EVERY)``."""

MIN_RECORDS = 5
"""A run closed with fewer records than this gets a :class:`FewRecordsWarning`."""


class FewRecordsWarning(UserWarning):
    """A record holds too few steps for trajectories (see ``Recorder(min_records=...)``)."""


DEFAULT_PROBE_SIZE = 16
"""Samples of the first training batch kept as the probe when no probe is given (the trainer's
default ``record.probe_size``; the probe passes cost two forward + backward passes over it)."""

RAW_FLUSH_BYTES = 64 * 2**20
"""Raw records are flushed as soon as this much is buffered, whatever ``flush_every`` says."""


def default_schedule(steps_per_epoch: int | None = None) -> sched.Schedule:
    """``every(200) | epoch_end(steps_per_epoch)`` when the steps per epoch are known; otherwise
    ``log_spaced(per_decade=5) | every(200)``: dense at the start, thinning out, plus regular
    points, so that a run of any length gets a trajectory (and :meth:`Recorder.close` adds the
    final weights)."""
    base = sched.every(DEFAULT_EVERY)
    if steps_per_epoch:
        return base | sched.epoch_end(steps_per_epoch)
    return sched.log_spaced(per_decade=DEFAULT_PER_DECADE) | base


def default_jacobian_schedule(steps_per_epoch: int | None = None) -> sched.Schedule:
    """The probe schedule: every epoch end when the number of steps per epoch is known, else
    ``log_spaced(per_decade=2, start=30) | every(1000)`` (steps 0, 30, 95, 300, 949, 1000,
    2000, …); :meth:`Recorder.close` adds the final weights. Its records add every quantity of
    the probe batch (Jacobians, delta_alignment, DFA's feedback_alignment) and cost about 10
    training steps more than a main record (benchmarks/recorder_overhead.py), so a 126-step run
    gets four and a 10⁴-step run about fifteen."""
    if steps_per_epoch:
        return sched.epoch_end(steps_per_epoch)
    return sched.log_spaced(per_decade=2, start=30) | sched.every(1000)


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


def _families(dynamics: Iterable[str] | bool | None) -> tuple[str, ...]:
    """The network-dynamics families asked for (``True``: all), validated."""
    if dynamics is None or dynamics is False:
        return ()
    if dynamics is True:
        return tuple(DYNAMICS)
    if isinstance(dynamics, str):
        raise TypeError(
            f"Recorder: dynamics must be a list of family names or True, not a string; e.g. "
            f"dynamics=[{dynamics!r}]"
        )
    families = list(dynamics)
    unknown = [name for name in families if name not in DYNAMICS]
    if unknown:
        raise ValueError(
            f"Recorder: dynamics names unknown families {', '.join(map(repr, unknown))}; valid "
            f"families: {', '.join(DYNAMICS)} (or True for all)"
        )
    return tuple(name for name in DYNAMICS if name in families)


def _selection(
    quantities: Iterable[str] | None,
    exclude: Iterable[str],
    dynamics: Iterable[str] | bool | None = None,
) -> tuple[str, ...]:
    """The variables to compute: ``quantities`` (default: all but the opt-in ones), plus those of
    the ``dynamics`` families, minus ``exclude``, validated."""
    if isinstance(quantities, str):
        raise TypeError("Recorder: quantities must be a list of names, not a string")
    default = [name for name in SELECTABLE if name not in OPT_IN]
    chosen = default if quantities is None else list(quantities)
    chosen += [name for family in _families(dynamics) for name in DYNAMICS[family]]
    excluded = list(exclude)
    for what, names in (("quantities", chosen), ("exclude", excluded)):
        if isinstance(names, str):
            raise TypeError(f"Recorder: {what} must be a list of names, not a string")
        unknown = [name for name in names if name not in SELECTABLE]
        if unknown:
            raise ValueError(
                f"Recorder: {what} names unknown quantities {', '.join(map(repr, unknown))}; "
                f"valid names: {', '.join(SELECTABLE)}"
            )
    return tuple(name for name in SELECTABLE if name in chosen and name not in excluded)


def _versions(params: list[Tensor]) -> int:
    """Sum of the parameters' in-place version counters: it grows with every optimizer step."""
    return sum(p._version for p in params)


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
        optimizer: read for ``lr`` and ``weight_decay`` (first parameter group); for PFA and
            KP the recorder also follows its updates (a step pre-hook, removed at
            :meth:`close`) for ``feedback_residual_predicted`` (:mod:`.decay`).
        schedule: steps with a record (default: :func:`default_schedule`).
        jacobian_schedule: the probe schedule: steps that also record the quantities of the
            probe batch (Jacobians, delta_alignment, DFA's feedback_alignment; each variable's
            attr ``schedule`` says which schedule it follows; default:
            :func:`default_jacobian_schedule`).
        raw_schedule: steps that record the raw tensors of ``raw_layers`` (default: the Jacobian
            schedule when ``raw_layers`` is given, else never).
        raw_layers: module names of converted layers whose raw tensors to keep, or ``"all"``.
        config: the run's config (stored as JSON); seed: the run's seed (-1 if unknown).
        steps_per_epoch: for the epoch coordinate and the default schedules.
        flush_every: records buffered before they are written (a crash loses at most these).
        resume: continue the record in ``run_dir`` (then call :meth:`load_state_dict`).
        quantities: the variables to compute (names from the schema, e.g. ``["grad_alignment",
            "feedback_alignment"]``; default: all but the opt-in ``dynamics``); a family
            computed together (the three of :mod:`~.quantities.gradients`, …) costs the same
            for one of its names as for all.
        exclude: variables not to compute (e.g. ``["delta_alignment", "jacobian_alignment",
            "jacobian_sv_true", "jacobian_sv_fb"]``).
        dynamics: opt-in families of network-dynamics variables to compute as well, on the
            probe schedule (``True``: all; default none): ``"representations"`` (activation),
            ``"spectra"`` (weight_sv, feedback_sv, feedback_target_sv), ``"gradient_noise"``
            (grad_snr, sample_grad_angle); see :data:`.schema.DYNAMICS`. Naming their variables
            in ``quantities`` also records them; ``exclude`` removes them.
        max_features: units per layer kept in ``activation`` (an evenly spaced subset of wider
            layers).
        max_rank: singular values per layer kept in the spectra (the largest).
        tags: the user's own factors of the run, a flat dict of name → string or number, stored
            as the JSON attr ``tags`` (e.g. ``{"wd": "burst"}``; combined runs use them as
            factors).
        min_records: :meth:`close` warns (:class:`FewRecordsWarning`) when the record holds
            fewer records than this; 0 never warns.
        final: :meth:`close` records the final weights when the last step seen was not
            recorded (see :meth:`close`).
        sinks: callables that also receive every record as it is made (TensorBoard, your own;
            see :mod:`alignment.recording.sinks`); one that raises is reported once and
            switched off, and never stops training.
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
        quantities: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        tags: Mapping[str, str | int | float] | None = None,
        min_records: int = MIN_RECORDS,
        final: bool = True,
        dynamics: Iterable[str] | bool | None = None,
        max_features: int = MAX_FEATURES,
        max_rank: int = MAX_RANK,
        sinks: Iterable[Sink] = (),
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
        for key, value in (("max_features", max_features), ("max_rank", max_rank)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Recorder: {key} must be an int ≥ 1, got {value!r}")
        self.variables = _selection(quantities, exclude, dynamics)
        self.max_features, self.max_rank = max_features, max_rank
        self.tags = check_tags({} if tags is None else dict(tags))
        self.min_records = int(min_records)
        self.final = bool(final)
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
        self._clock: float | None = None  # perf_counter() at the first step() of this process
        self._elapsed_before = 0.0  # seconds of the run before it (a resumed checkpoint's)
        self._quantities: dict[str, list] = {}
        self._params = list(model.parameters())
        self._seen: tuple[int, Tensor, Tensor, int] | None = None
        self._pending: dict[int, dict[str, np.float64]] = {}
        self._user_vars: dict[str, Variable] = {}
        self._decay = ResidualDecay(model, optimizer)
        self._decay_unknown = False
        self._sinks = SinkDispatcher(sinks)
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
        self.net = Network(
            self.model, x_probe, max_features=self.max_features, max_rank=self.max_rank
        )
        if self.raw_layers == "all":
            self.raw_layers = tuple(self.net.names)
        unknown = [name for name in self.raw_layers if name not in self.net.layers]
        if unknown:
            raise ValueError(
                f"Recorder: raw_layers {unknown} are not converted layers of the model; "
                f"valid names: {', '.join(self.net.names)}"
            )
        wanted = set(self.variables)
        self._quantities = {
            when: [
                q
                for q in QUANTITIES
                if q.when == when and wanted & set(q.variables) and q.applies(self.net)
            ]
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
            "tags": json.dumps(self.tags, sort_keys=True),
            "quantities": json.dumps(list(self.variables)),
            "max_features": self.max_features,
            "max_rank": self.max_rank,
        }

    def _static(self) -> xr.Dataset:
        x_probe, y_probe = self.probe
        ds = xr.Dataset(
            coords={"layer": np.array(self.net.names, dtype=object), **layer_coords(self.net)}
        )
        dims = PROBE_INPUT_DIMS.get(x_probe.dim())
        if dims is not None:
            ds["probe_input"] = xr.Variable(dims, x_probe.cpu().numpy(), PROBE_INPUT.attrs)
        if y_probe.dim() == 1:
            ds["probe_label"] = xr.Variable(
                ("sample",), y_probe.cpu().numpy(), VARIABLES["probe_label"].attrs
            )
        for quantity in self._quantities["static"]:
            ctx = StepContext(self.net, x_probe, y_probe, self.loss_fn, self.probe)
            for name, values in self._selected(quantity.compute(ctx)).items():
                ds[name] = xr.Variable(VARIABLES[name].dims, values, VARIABLES[name].attrs)
        ds.attrs = self.attrs()
        return validate(ds)

    def _resume(self) -> None:
        self.store.hold_writer()  # first: no other writer may be cleaning or appending
        self._decay_unknown = True  # the updates so far: unless load_state_dict restores them
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
        for key in ("max_features", "max_rank"):  # the widths of the unit and rank dims
            kept = static.attrs.get(key, getattr(self, key))
            if int(kept) != getattr(self, key):
                raise ValueError(
                    f"cannot resume {self.run_dir}: its record keeps {key}={kept}, this recorder "
                    f"asks for {getattr(self, key)}; pass {key}={kept}"
                )
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
    def _selected(self, values: dict[str, Any]) -> dict[str, Any]:
        return {name: v for name, v in values.items() if name in self.variables}

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
        record at this step, as do scalars :meth:`log` ged for this step. Returns whether the
        step was recorded.
        """
        s = self._next_step if step is None else int(step)
        if scalars:
            unknown = sorted(set(scalars) - set(SCALARS))
            if unknown:
                raise ValueError(
                    f"Recorder.step: unknown scalar(s) {', '.join(unknown)}; accepted: "
                    f"{', '.join(SCALARS)} (log your own with rec.log(name=value))"
                )
        self._decay.start(known=not (self._decay_unknown and s > 0))
        if self._clock is None:
            self._clock = time.perf_counter()
        self._emit_pending(before=s)
        extra = self._pending.get(s, {}) | {k: np.float64(v) for k, v in scalars.items()}
        main, jacobian, raw_step = self._plan(s, bool(extra))
        self._next_step = s + 1
        self._seen = (s, x, y, _versions(self._params))
        self._pending.pop(s, None)
        if not (main or raw_step):
            if epoch is not None:
                self._epoch = int(epoch)
            return False
        self._record(s, self._epoch_of(s, epoch), x, y, main, jacobian, raw_step, extra)
        return True

    def _record(
        self,
        s: int,
        epoch_value: int,
        x: Tensor,
        y: Tensor,
        main: bool,
        jacobian: bool,
        raw_step: bool,
        extra: dict[str, Any],
    ) -> None:
        """Compute and buffer the record of step ``s`` (flushing when the buffer is full)."""
        if self.net is None:
            self._setup(x[:DEFAULT_PROBE_SIZE], y[:DEFAULT_PROBE_SIZE])
        start = time.perf_counter()
        ctx = StepContext(
            self.net,
            x,
            y,
            self.loss_fn,
            self.probe,
            self.optimizer,
            self._decay.factor,
            probe_record=main and jacobian,
        )
        values: dict[str, Any] = {}
        # a rule may replace a feedback buffer in its forward (brSF redraws B): put the tensors
        # back, so that a record leaves the model as it found it (also after the last step)
        saved = [(layer, dict(layer._buffers)) for layer in self.net.layers.values()]
        # a record measures the rule in full precision, whatever autocast the training step uses
        try:
            with torch.autocast(x.device.type, enabled=False):
                if main:
                    whens = ("main", "jacobian") if jacobian else ("main",)
                    for quantity in (q for when in whens for q in self._quantities[when]):
                        values.update(self._selected(quantity.compute(ctx)))
                raw_values = raw.compute(ctx, self.raw_layers) if raw_step else {}
        finally:
            for layer, buffers in saved:
                layer._buffers.update(buffers)
        if raw_step:
            self._raw_buffer.append(_Record(s, epoch_value, raw_values))
            self._raw_bytes += sum(data.nbytes for _, data in raw_values.values())
        if main:
            values["record_seconds"] = np.float64(time.perf_counter() - start)
            values["elapsed_seconds"] = np.float64(self._elapsed())
            self._buffered(_Record(s, epoch_value, values | extra))
        self._last_recorded = s
        full = max(len(self._buffer), len(self._raw_buffer)) >= self.flush_every
        if full or self._raw_bytes >= RAW_FLUSH_BYTES:
            self.flush()

    def _plan(self, s: int, forced: bool) -> tuple[bool, bool, bool]:
        """(main record, Jacobians, raw tensors) at step ``s``; checks the call."""
        jacobian = self.jacobian_schedule(s)
        raw_step = bool(self.raw_layers) and self.raw_schedule(s)
        main = jacobian or forced or self.schedule(s)
        if main or raw_step:
            self._check_step(s, "Recorder.step")
        return main, jacobian, raw_step

    def _check_step(self, s: int, caller: str) -> None:
        if self._closed:
            raise RuntimeError(f"{caller} after close()")
        if s <= self._last_recorded:
            raise ValueError(
                f"{caller}: step {s} is not after the last recorded step "
                f"{self._last_recorded}; steps must increase (to replay after a checkpoint, "
                "resume with load_state_dict)"
            )

    # ------------------------------------------------------------------ scalars of the loop
    def log(
        self, *, step: int | None = None, units: Mapping[str, str] | None = None, **scalars: float
    ) -> None:
        """Store scalars of the training loop: test accuracy or any value of your own.

        >>> rec.log(test_accuracy=0.93, my_metric=1.2)                       # doctest: +SKIP

        ``test_accuracy``, ``test_loss``, ``val_accuracy`` and ``val_loss`` are schema variables
        (accuracy as a fraction, 0.93, not 93 %); any other name (a Python identifier) is
        stored as the network-level variable ``user_<name>`` with ``units`` (default "1").

        The values belong to step ``step``, by default the weights as they are now: the step
        the next :meth:`step` call will see (after ``n`` updates, step ``n``). So call it between
        training steps, e.g. after evaluating at the end of an epoch. The step gets a full
        record (all quantities at those weights) when :meth:`step` reaches it, or at
        :meth:`close` for values logged after the last step.
        """
        s = self._next_step if step is None else int(step)
        units = dict(units or {})
        values: dict[str, np.float64] = {}
        for name, value in scalars.items():
            if name in SCALARS:
                stored = name
            elif name in VARIABLES:
                raise ValueError(
                    f"Recorder.log: {name!r} is a quantity the recorder computes; log "
                    f"{', '.join(SCALARS)} or names of your own"
                )
            else:
                stored, var = user_variable(name, units.get(name, "1"))
                self._user_vars.setdefault(stored, var)
            values[stored] = np.float64(float(value))
        if self._buffer and self._buffer[-1].step == s:
            self._buffer[-1].values.update(values)
            self._send(_Record(s, self._buffer[-1].epoch, values))
            return
        self._check_step(s, "Recorder.log")
        self._pending.setdefault(s, {}).update(values)

    def _emit_pending(self, before: float) -> None:
        """Buffer scalar-only records for logged steps < ``before`` that no record reached."""
        for s in sorted(p for p in self._pending if p < before):
            values = self._pending.pop(s)
            self._buffered(_Record(s, self._epoch_of(s, None), values))
            self._last_recorded = s

    # ------------------------------------------------------------------ recording
    def _epoch_of(self, step: int, epoch: int | None) -> int:
        if epoch is not None:
            self._epoch = int(epoch)
            return self._epoch
        if self.steps_per_epoch:
            return step // self.steps_per_epoch
        return 0 if self._epoch is None else self._epoch

    def _buffered(self, record: _Record) -> None:
        """Buffer a main record for the next flush and send it to the sinks."""
        self._buffer.append(record)
        self._send(record)

    def _send(self, record: _Record) -> None:
        if not self._sinks.sinks:
            return
        variables = {name: VARIABLES.get(name) or self._user_vars[name] for name in record.values}
        layers = () if self.net is None else tuple(self.net.names)
        self._sinks.send(Record(record.step, record.epoch, layers, dict(record.values), variables))

    # ------------------------------------------------------------------ storage
    def _main_segment(self, records: list[_Record]) -> xr.Dataset:
        names = list(dict.fromkeys(name for r in records for name in r.values))
        data_vars = {}
        for name in names:
            var = VARIABLES.get(name) or self._user_vars[name]
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

    def close(self, *, final: bool | None = None) -> None:
        """Record the final weights, flush, compact the record into one segment per log, and
        warn if it holds fewer than ``min_records`` records. Idempotent.

        The final record: :meth:`step` records step ``s`` at the weights the update of step
        ``s`` is computed at, so after the last update of a loop (step ``s``) the final
        weights are those of step ``s + 1``, which no :meth:`step` call showed the recorder.
        ``close()`` records them as step ``s + 1`` (all quantities, Jacobians included), on
        the last batch seen (the training-batch quantities need one). If no update happened
        since the last :meth:`step` call (the loop called it once more after training, as
        the trainer does), the final weights are those of step ``s``, recorded unless already
        recorded. Updates are detected from the parameters' version counters, which every
        in-place optimizer step increments. ``final=False`` (or ``Recorder(final=False)``)
        skips it; closing while an exception propagates (a ``with`` block or a ``finally``
        left on an error) skips it too, and only a close without one marks the record
        finished (:func:`alignment.summary.run_state`).
        """
        if self._closed:
            return
        failing = sys.exc_info()[0] is not None
        if (self.final if final is None else final) and not failing and self._seen is not None:
            s, x, y, versions = self._seen
            target = s + 1 if _versions(self._params) != versions else s
            if target > self._last_recorded:
                self._emit_pending(before=target)
                extra = self._pending.pop(target, {})
                epoch_value = self._epoch_of(target, None)
                self._record(target, epoch_value, x, y, True, True, False, extra)
        if self.net is not None:
            self._emit_pending(before=math.inf)
        try:
            self.flush()
        finally:
            self._sinks.close()  # the sinks have every record: they got each as it was made
        if self.net is not None:
            for kind in KINDS:
                self.store.compact(kind)
            if not failing:
                self.store.mark_closed()
            self.store.release_writer()
        self._closed = True
        self._seen = None
        self._decay.remove()
        self._warn_if_few()

    def _warn_if_few(self) -> None:
        if self.min_records <= 0 or not self.store.exists():
            return
        ds = self.store.read("main", lazy=True)
        count = 0 if ds is None else ds.sizes["step"]
        if count < self.min_records:
            warnings.warn(
                f"Recorder: {self.run_dir} holds only {count} record(s) (schedule "
                f"{self.schedule!r}, {self._next_step} steps); trajectories need more. Record "
                "more often: schedule=alignment.recording.schedules.every(n) with a smaller n "
                "or log_spaced(per_decade=...), or leave schedule unset for the default that "
                "adapts to any run length; min_records=0 silences this warning.",
                FewRecordsWarning,
                stacklevel=3,
            )

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(final=False if exc_type is not None else None)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the record: flushes, then the next step."""
        self.flush()
        return {
            "step": self._next_step,
            "epoch": self._epoch,
            "last_recorded": self._last_recorded,
            "residual_decay": self._decay.state_dict(),
            "elapsed_seconds": self._elapsed(),
        }

    def _elapsed(self) -> float:
        """Seconds of the run so far: since the first :meth:`step` of this process, plus what
        a resumed checkpoint had counted."""
        since = 0.0 if self._clock is None else time.perf_counter() - self._clock
        return self._elapsed_before + since

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
        self._pending = {s: v for s, v in self._pending.items() if s < stop}
        self._seen = None
        self._epoch = state.get("epoch")
        self._decay.load_state_dict(state.get("residual_decay"))
        self._decay_unknown = False
        self._elapsed_before = float(state.get("elapsed_seconds", 0.0))
        self._clock = None

    def __repr__(self) -> str:
        layers = "?" if self.net is None else len(self.net.names)
        return (
            f"Recorder({self.run_dir}, layers={layers}, schedule={self.schedule!r}, "
            f"jacobian_schedule={self.jacobian_schedule!r}, next_step={self._next_step})"
        )
