"""Sinks: where a :class:`~alignment.recording.Recorder`'s records go besides the zarr record.

The zarr record (``RUN/record.zarr``) stays the source of truth. A sink is any callable that
takes one :class:`Record`, the record of one step, as soon as the recorder has computed it::

    def show(record):                     # a sink: one argument, its result is ignored
        print(record.step, record.scalars().get("loss"))

    rec = alignment.Recorder(model, "runs/pfa-0", optimizer=opt, sinks=[show])

A :class:`Record` holds ``step``, ``epoch``, ``layers`` (the layer names) and ``values`` (variable
name → numpy value, dims as in the schema without ``step``), and gives them as

* :meth:`Record.scalars`: a flat dict of floats, ``"loss"``, ``"test_accuracy"``, … and
  ``"feedback_alignment/fc1"`` (``variable/layer``) for per-layer scalars; values the record
  did not measure (NaN: e.g. the probe quantities between probe records) are left out, so
  ``wandb.log(record.scalars(), step=record.step)`` or an MLflow ``log_metrics`` take it as is;
* :meth:`Record.distributions`: ``"delta_alignment/fc1"`` → the per-sample values (1-D), for
  every variable with a dim after ``layer`` (per-sample alignments, singular values);
* :meth:`Record.dataset`: the step as an xarray Dataset (a ``step`` dim of length one, the
  schema's dims and attrs), like ``alignment.open_run(RUN).sel(step=[record.step])``.

A sink may also have a ``close()`` method, called once when the recorder closes (flush a file,
end a session). :class:`~alignment.recording.tensorboard.TensorBoardSink` is one such sink.

What a sink can and cannot do to training:

* Sinks run in one background thread, fed by an unbounded queue: ``Recorder.step`` only puts the
  record in the queue, so a slow sink does not slow training (a record is a few kB; the queue
  holds what the sinks have not taken yet). ``Recorder.close`` waits for the sinks to take every
  record and close, at most :data:`CLOSE_TIMEOUT` seconds.
* A sink that raises is switched off: the recorder reports it once (a :class:`SinkWarning`
  naming the sink and its error, from the training thread at the next record or at ``close``)
  and sends it nothing more; training, the zarr record and the other sinks go on.
* Records reach the sinks in step order, each step once, except that ``rec.log(step=s, ...)``
  for a step already recorded sends a second record of step ``s`` holding only the logged values.
"""

from __future__ import annotations

import math
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from alignment.recording.schema import Variable

Sink = Callable[["Record"], object]
"""A sink: called with each :class:`Record`; may have a ``close()`` method."""

CLOSE_TIMEOUT = 60.0
"""Seconds ``Recorder.close`` waits for the sinks to take the queued records and close."""


class SinkWarning(UserWarning):
    """A sink raised and was switched off, or did not finish in time at close."""


@dataclass(frozen=True)
class Record:
    """One step's record as the sinks see it.

    Attributes:
        step: the training step (the weights after ``step`` updates).
        epoch: its epoch.
        layers: the recorded layers' names, in forward order (the ``layer`` coordinate).
        values: variable name → value: a float for network-level variables (``loss``, ``lr``,
            ``test_accuracy``, ``user_<name>``, …), an array over ``layers`` for per-layer ones
            (``feedback_alignment``, …), an array ``layers × sample`` (or ``× sv``) for the
            per-sample ones; NaN where the record did not measure it.
        variables: the schema entry of each value (dims with ``step`` first, attrs).
    """

    step: int
    epoch: int
    layers: tuple[str, ...]
    values: Mapping[str, Any]
    variables: Mapping[str, Variable]

    def scalars(self) -> dict[str, float]:
        """Network-level scalars by name and per-layer scalars as ``variable/layer``; NaN and
        infinite values are left out."""
        out: dict[str, float] = {}
        for name, value in self.values.items():
            dims = self.variables[name].dims[1:]
            if dims == ():
                _put(out, name, value)
            elif dims == ("layer",):
                for layer, v in zip(self.layers, np.asarray(value), strict=True):
                    _put(out, f"{name}/{layer}", v)
        return out

    def distributions(self) -> dict[str, np.ndarray]:
        """``variable/layer`` → the finite values along the variable's dim after ``layer``
        (``sample`` for the per-sample alignments, ``sv`` for singular values); layers without
        a finite value are left out."""
        out: dict[str, np.ndarray] = {}
        for name, value in self.values.items():
            dims = self.variables[name].dims[1:]
            if len(dims) != 2 or dims[0] != "layer":
                continue
            for layer, row in zip(self.layers, np.asarray(value, dtype=np.float64), strict=True):
                finite = row[np.isfinite(row)]
                if finite.size:
                    out[f"{name}/{layer}"] = finite
        return out

    def dataset(self) -> xr.Dataset:
        """The record as a Dataset with a ``step`` dim of length one (``epoch`` and ``layer``
        coordinates, the schema's attrs)."""
        data_vars = {
            name: xr.Variable(
                self.variables[name].dims, np.asarray(value)[None], self.variables[name].attrs
            )
            for name, value in self.values.items()
        }
        coords = {
            "step": np.array([self.step], dtype=np.int64),
            "epoch": ("step", np.array([self.epoch], dtype=np.int64)),
            "layer": np.array(self.layers, dtype=object),
        }
        return xr.Dataset(data_vars, coords)


def _put(out: dict[str, float], key: str, value: object) -> None:
    number = float(value)
    if math.isfinite(number):
        out[key] = number


def sink_name(sink: object) -> str:
    """How a warning names a sink: a function's qualified name, else its class's name."""
    name = getattr(sink, "__qualname__", None)
    return name if isinstance(name, str) else type(sink).__qualname__


_CLOSE = object()
"""Queue item: close the sinks and stop the thread."""


class SinkDispatcher:
    """Feeds records to sinks in a background thread; a sink that raises is reported once and
    switched off (see the module docstring)."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        if callable(sinks) or isinstance(sinks, (str, bytes)):
            raise TypeError("Recorder: sinks must be a list of callables, e.g. sinks=[my_sink]")
        self.sinks = list(sinks)
        for sink in self.sinks:
            if not callable(sink):
                raise TypeError(
                    f"Recorder: a sink must be callable (record) -> None, got {type(sink).__name__}"
                )
        self._live = list(self.sinks)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failures: list[tuple[object, BaseException, str]] = []
        self._lock = threading.Lock()
        self._closed = False

    def send(self, record: Record) -> None:
        """Queue ``record`` for the sinks (returns at once), and report sinks that failed."""
        self.report()
        if self._closed or not self.sinks:
            return
        self._start()
        self._queue.put(record)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="alignment-sinks", daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Wait for the sinks to take every queued record and close them (at most ``timeout``
        seconds, default :data:`CLOSE_TIMEOUT`), then report failures."""
        if self._closed:
            return
        timeout = CLOSE_TIMEOUT if timeout is None else timeout
        self._closed = True
        if self.sinks:  # also when no record came: every sink's close() is called once
            self._start()
            self._queue.put(_CLOSE)
            self._thread.join(timeout)
            if self._thread.is_alive():
                warnings.warn(
                    f"Recorder: the sinks ({', '.join(map(sink_name, self._live))}) did not "
                    f"finish within {timeout:g} s; records they had not taken are lost for them "
                    "(the zarr record is complete)",
                    SinkWarning,
                    stacklevel=3,
                )
        self.report()

    def report(self) -> None:
        """Warn once for each sink that failed since the last report (training thread)."""
        with self._lock:
            failures, self._failures = self._failures, []
        for sink, error, what in failures:
            warnings.warn(
                f"Recorder: sink {sink_name(sink)} raised {type(error).__name__}: {error} "
                f"({what}); it is switched off, training and the zarr record go on",
                SinkWarning,
                stacklevel=4,
            )

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                for sink in list(self._live):
                    close = getattr(sink, "close", None)
                    if callable(close):
                        self._call(sink, close, "at close")
                return
            for sink in list(self._live):
                self._call(sink, lambda s=sink, r=item: s(r), f"at step {item.step}")

    def _call(self, sink: object, action: Callable[[], object], what: str) -> None:
        try:
            action()
        except Exception as error:
            self._live.remove(sink)
            with self._lock:
                self._failures.append((sink, error, what))
