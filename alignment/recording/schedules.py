"""Recording schedules: picklable callables ``step -> bool``, composable with ``|`` and ``&``.

A training step ``s`` is the step whose update is computed at the weights reached after ``s``
updates (the recorder is called *before* the forward of step ``s``). So step 0 records the
initial weights and step ``k·steps_per_epoch`` records the weights at the end of epoch ``k − 1``.

>>> from alignment.recording import schedules
>>> s = schedules.every(100) | schedules.epoch_end(937)
>>> s.steps(1200)
[0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 937, 1000, 1100]
>>> schedules.log_spaced(per_decade=5).steps(41)
[0, 1, 2, 3, 4, 6, 10, 16, 25, 40]

Every schedule is a small frozen dataclass (so it pickles, compares and prints as the expression
that built it) and costs a few integer operations per call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

__all__ = [
    "AllOf",
    "AnyOf",
    "Schedule",
    "always",
    "at",
    "epoch_end",
    "every",
    "log_spaced",
    "never",
]


class Schedule:
    """Base class: ``schedule(step) -> bool``; ``a | b`` records when either does, ``a & b``
    when both do."""

    def __call__(self, step: int) -> bool:
        raise NotImplementedError

    def __or__(self, other: Schedule) -> Schedule:
        return AnyOf((*_parts(self, AnyOf), *_parts(_as_schedule(other), AnyOf)))

    def __ror__(self, other: Schedule) -> Schedule:
        return _as_schedule(other) | self

    def __and__(self, other: Schedule) -> Schedule:
        return AllOf((*_parts(self, AllOf), *_parts(_as_schedule(other), AllOf)))

    def steps(self, stop: int, start: int = 0) -> list[int]:
        """The steps in ``[start, stop)`` this schedule records (for planning and tests)."""
        return [s for s in range(start, stop) if self(s)]


def _as_schedule(value: object) -> Schedule:
    if isinstance(value, Schedule):
        return value
    if callable(value):
        return Function(value)
    raise TypeError(f"cannot combine a schedule with {type(value).__name__}")


def _parts(schedule: Schedule, kind: type) -> tuple[Schedule, ...]:
    return schedule.parts if isinstance(schedule, kind) else (schedule,)


@dataclass(frozen=True)
class AnyOf(Schedule):
    parts: tuple[Schedule, ...]

    def __call__(self, step: int) -> bool:
        return any(part(step) for part in self.parts)

    def __repr__(self) -> str:
        return " | ".join(repr(p) for p in self.parts)


@dataclass(frozen=True)
class AllOf(Schedule):
    parts: tuple[Schedule, ...]

    def __call__(self, step: int) -> bool:
        return all(part(step) for part in self.parts)

    def __repr__(self) -> str:
        return " & ".join(f"({p!r})" if isinstance(p, AnyOf) else repr(p) for p in self.parts)


@dataclass(frozen=True)
class Function(Schedule):
    """Any callable ``step -> bool`` (picklable if the callable is)."""

    function: object

    def __call__(self, step: int) -> bool:
        return bool(self.function(step))  # type: ignore[operator]

    def __repr__(self) -> str:
        return getattr(self.function, "__name__", repr(self.function))


@dataclass(frozen=True)
class every(Schedule):  # noqa: N801 - reads as a function: every(50)
    """Every ``n`` steps from ``offset`` on: steps offset, offset + n, offset + 2n, …"""

    n: int
    offset: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"every(n): n must be an int ≥ 1, got {self.n!r}")

    def __call__(self, step: int) -> bool:
        return step >= self.offset and (step - self.offset) % self.n == 0

    def __repr__(self) -> str:
        return f"every({self.n})" if not self.offset else f"every({self.n}, offset={self.offset})"


@dataclass(frozen=True)
class log_spaced(Schedule):  # noqa: N801
    """Step 0 and the distinct integers ``round(start·10^(j/per_decade))``, j = 0, 1, 2, …

    Dense early, ``per_decade`` records per decade later (points closer than one step merge):
    ``log_spaced(per_decade=10)`` records steps 0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, …, 39 steps
    up to 10⁴ and 49 up to 10⁵.
    """

    per_decade: int = 10
    start: int = 1

    def __post_init__(self) -> None:
        for name in ("per_decade", "start"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"log_spaced: {name} must be an int ≥ 1, got {value!r}")

    def _point(self, j: int) -> int:
        return round(self.start * 10.0 ** (j / self.per_decade))

    @cached_property
    def _dense(self) -> frozenset[int]:
        points, j = {0}, 0
        while (value := self._point(j)) < 10_000 * self.start:
            points.add(value)
            j += 1
        return frozenset(points)

    def __call__(self, step: int) -> bool:
        if step < 10_000 * self.start:
            return step in self._dense
        j = round(self.per_decade * math.log10(step / self.start))
        return any(self._point(i) == step for i in (j - 1, j, j + 1))

    def __repr__(self) -> str:
        start = f", start={self.start}" if self.start != 1 else ""
        return f"log_spaced(per_decade={self.per_decade}{start})"


@dataclass(frozen=True)
class epoch_end(Schedule):  # noqa: N801
    """Step 0 and the first step of every epoch: the weights at the end of each epoch.

    The record at step ``k·steps_per_epoch`` is taken before that step's update, so it holds the
    weights after all ``k`` epochs (the paper logs "at the start of every epoch"). Step 0 holds the
    initialisation; ``Recorder.close()`` records the final weights after the last step.
    """

    steps_per_epoch: int

    def __post_init__(self) -> None:
        n = self.steps_per_epoch
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"epoch_end: steps_per_epoch must be an int ≥ 1, got {n!r}")

    def __call__(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def __repr__(self) -> str:
        return f"epoch_end({self.steps_per_epoch})"


@dataclass(frozen=True)
class at(Schedule):  # noqa: N801
    """Exactly the given steps."""

    points: frozenset[int]

    def __init__(self, points: Iterable[int]) -> None:
        object.__setattr__(self, "points", frozenset(int(p) for p in points))

    def __call__(self, step: int) -> bool:
        return step in self.points

    def __repr__(self) -> str:
        return f"at({sorted(self.points)})"


@dataclass(frozen=True)
class _Constant(Schedule):
    value: bool

    def __call__(self, step: int) -> bool:
        return self.value

    def __repr__(self) -> str:
        return "always" if self.value else "never"

    def __reduce__(self) -> tuple:
        return (_constant, (self.value,))


def _constant(value: bool) -> _Constant:
    return always if value else never


never: Schedule = _Constant(False)
"""Records nothing."""

always: Schedule = _Constant(True)
"""Records every step."""
