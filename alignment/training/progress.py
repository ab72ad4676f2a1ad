"""A training run's progress output: a tqdm bar on a terminal, plain lines in a log.

On a terminal (stdout and stderr both are) the run shows tqdm's bar, as it always has. Anywhere
else (Slurm, CI, output redirected to a file) a bar's carriage-return updates would fill the log,
so the run prints one line every ``every`` seconds and one at each epoch's end instead, e.g.::

    bp seed 0: step 310/1240 (epoch 5/20) loss 0.4127 acc 0.9130 12.4 steps/s ETA 0:01:15
    bp seed 0: epoch 5/20 done: step 310/1240 loss 0.4127 acc 0.9160 12.4 steps/s ETA 0:01:15

``acc`` is the last test accuracy (measured at each epoch's start, and in an epoch-end line the
one just measured on the finished epoch's model); steps/s counts the steps this process trained.
:func:`progress_display` picks the style; ``ProgressOptions(mode=...)`` forces one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

MODES = ("auto", "bar", "lines", "off")


@dataclass(frozen=True)
class ProgressOptions:
    """How a run shows its progress.

    ``mode``: ``auto`` (a bar on a terminal, else lines), ``bar``, ``lines`` or ``off``.
    ``every``: seconds between lines (None: the config's ``progress_every``). ``epoch_lines``:
    also a line at each epoch's end. ``label``: what each line starts with (default: the rule
    and seed). ``stream``: where lines go (default: stdout at the time of writing).
    """

    mode: str = "auto"
    every: float | None = None
    epoch_lines: bool = True
    label: str | None = None
    stream: TextIO | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"progress mode {self.mode!r}: choose from {', '.join(MODES)}")


class _Off:
    """No output."""

    def update(self, loss: float, accuracy: float) -> None:
        """One step trained."""

    def epoch_end(self, epoch: int, accuracy: float) -> None:
        """Epoch ``epoch`` (0-based) finished; ``accuracy`` was measured on its model."""

    def close(self) -> None:
        """The run stopped."""


class _Bar(_Off):
    """tqdm's bar (on stderr), with the loss and the last accuracy after it."""

    def __init__(self, total: int, initial: int, label: str) -> None:
        self.bar = tqdm(total=total, initial=initial, desc=label)

    def update(self, loss: float, accuracy: float) -> None:
        self.bar.update()
        self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}")

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LineProgress(_Off):
    """One plain line every ``every`` seconds and (``epoch_lines``) at each epoch's end: step,
    epoch, loss, accuracy, steps/s and the estimated time left. Never a carriage return."""

    def __init__(
        self,
        total: int,
        initial: int,
        per_epoch: int,
        label: str,
        *,
        every: float = 30.0,
        epoch_lines: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.step, self.per_epoch, self.label = total, initial, per_epoch, label
        self.every, self.epoch_lines, self.stream, self.clock = every, epoch_lines, stream, clock
        self.initial, self.started = initial, clock()
        self.last_line = self.started
        self.loss, self.accuracy = math.nan, math.nan

    def update(self, loss: float, accuracy: float) -> None:
        self.step += 1
        self.loss, self.accuracy = loss, accuracy
        if self.clock() - self.last_line >= self.every:
            self.write(self.line())

    def epoch_end(self, epoch: int, accuracy: float) -> None:
        self.accuracy = accuracy
        if self.epoch_lines:
            self.write(self.line(done=epoch))

    def line(self, done: int | None = None) -> str:
        """The progress line now (``done``: the epoch that just finished)."""
        elapsed = self.clock() - self.started
        trained = self.step - self.initial
        rate = trained / elapsed if trained and elapsed > 0 else math.nan
        eta = (self.total - self.step) / rate if rate > 0 else math.nan
        epochs = math.ceil(self.total / self.per_epoch)
        epoch = min(self.step // self.per_epoch + 1, epochs)
        where = f"step {self.step}/{self.total} (epoch {epoch}/{epochs})"
        if done is not None:
            where = f"epoch {done + 1}/{epochs} done: step {self.step}/{self.total}"
        return (
            f"{self.label}: {where} loss {self.loss:.4f} acc {self.accuracy:.4f} "
            f"{rate:.3g} steps/s ETA {_clock(eta)}"
        )

    def write(self, line: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()
        self.last_line = self.clock()


def _on_terminal() -> bool:
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def progress_display(
    options: ProgressOptions,
    *,
    total: int,
    initial: int,
    per_epoch: int,
    label: str,
    every: float,
) -> _Off:
    """The progress display ``options`` ask for (``auto``: tqdm on a terminal, else lines every
    ``options.every or every`` seconds)."""
    mode = options.mode
    if mode == "auto":
        mode = "bar" if _on_terminal() else "lines"
    label = options.label or label
    if mode == "bar":
        return _Bar(total, initial, label)
    if mode == "lines":
        return LineProgress(
            total,
            initial,
            per_epoch,
            label,
            every=options.every if options.every is not None else every,
            epoch_lines=options.epoch_lines,
            stream=options.stream,
        )
    return _Off()
