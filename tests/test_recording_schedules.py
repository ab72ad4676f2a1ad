"""Recording schedules: semantics, composition, pickling."""

from __future__ import annotations

import pickle

import pytest

from alignment.recording import schedules as s


def test_every_and_offset() -> None:
    assert s.every(3).steps(10) == [0, 3, 6, 9]
    assert s.every(4, offset=2).steps(12) == [2, 6, 10]
    with pytest.raises(ValueError, match="n must be an int"):
        s.every(0)


def test_epoch_end_records_the_weights_at_each_epoch_boundary() -> None:
    assert s.epoch_end(5).steps(16) == [0, 5, 10, 15]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        s.epoch_end(0)


def test_log_spaced_is_dense_early_and_logarithmic_later() -> None:
    schedule = s.log_spaced(per_decade=10)
    assert schedule.steps(21) == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20]
    assert len(schedule.steps(10**4 + 1)) == 39
    assert len(schedule.steps(10**5 + 1)) == 49  # the membership test past the table agrees
    assert s.log_spaced(per_decade=5).steps(41) == [0, 1, 2, 3, 4, 6, 10, 16, 25, 40]
    assert s.log_spaced(per_decade=2, start=100).steps(1001) == [0, 100, 316, 1000]
    for step in (12_589, 15_849, 19_953, 10**6):
        assert schedule(step)
    assert not schedule(12_590)


def test_constants_and_at() -> None:
    assert s.never.steps(5) == [] and s.always.steps(3) == [0, 1, 2]
    assert s.at([7, 2]).steps(10) == [2, 7]


def test_composition() -> None:
    either = s.every(4) | s.at([5])
    assert either.steps(10) == [0, 4, 5, 8]
    both = s.every(2) & s.every(3)
    assert both.steps(13) == [0, 6, 12]
    flat = s.every(2) | s.every(3) | s.never
    assert len(flat.parts) == 3 and repr(flat) == "every(2) | every(3) | never"
    assert (s.every(2) | (lambda step: step == 7)).steps(9) == [0, 2, 4, 6, 7, 8]


@pytest.mark.parametrize(
    "schedule",
    [
        s.every(5),
        s.log_spaced(),
        s.epoch_end(9),
        s.never,
        s.always,
        s.at([1, 2]),
        s.every(7) | s.epoch_end(3) & s.every(2),
    ],
)
def test_schedules_pickle_and_compare(schedule: s.Schedule) -> None:
    back = pickle.loads(pickle.dumps(schedule))
    assert back == schedule and back.steps(200) == schedule.steps(200)
    assert repr(back) == repr(schedule)
    assert pickle.loads(pickle.dumps(s.never)) is s.never
