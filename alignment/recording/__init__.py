"""Instrumentation: record alignment quantities of a converted model inside any training loop.

* :class:`Recorder`: ``rec.step(x, y)`` once per training step (before its forward),
  ``rec.log(test_accuracy=..., my_metric=...)``, ``close()``;
* :mod:`schedules`: ``every(n)``, ``log_spaced(...)``, ``epoch_end(steps_per_epoch)``, ``never``,
  ``always``, composable with ``|``;
* :func:`open_run`, :func:`open_raw`, :func:`open_runs`, :func:`combine_runs`, :func:`to_netcdf`:
  read records; :func:`grid` regroups a run stack into a dense grid over named factors,
  :func:`tidy` makes a long table (pandas) of it;
* :mod:`schema`: the variables, their dims and attrs, and :func:`validate`.
"""

from __future__ import annotations

from alignment.recording import schedules, schema
from alignment.recording.combine import combine_runs, grid, tidy
from alignment.recording.open import open_raw, open_run, open_runs, to_netcdf
from alignment.recording.recorder import FewRecordsWarning, Recorder
from alignment.recording.schema import SchemaError, validate

__all__ = [
    "FewRecordsWarning",
    "Recorder",
    "SchemaError",
    "combine_runs",
    "grid",
    "open_raw",
    "open_run",
    "open_runs",
    "schedules",
    "schema",
    "tidy",
    "to_netcdf",
    "validate",
]
