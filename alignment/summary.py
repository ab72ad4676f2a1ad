"""The summary of a run: its state (running, interrupted, finished), accuracy and each layer's
last alignment, for the trainer's runs and for records of a user's own training loop alike.

A run is *finished* when the trainer wrote ``DONE`` or the recorder was closed normally
(``Recorder.close()`` outside an exception marks the record closed); *running* while a process
holds the run folder's lock (``<run>/.lock``, :mod:`alignment.runlock`: taken by the trainer, a
sweep worker, and every recorder while it writes); *interrupted* otherwise (killed, crashed, or
stopped by an exception). Accuracies are in percent everywhere; "final" is said of finished runs
only, the others show their last recorded value and its step.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import xarray as xr

from alignment.recording.store import RECORD, SegmentStore

DONE = "DONE"  # alignment.training.trainer.DONE (not imported: no torch for a summary)


class State(StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"


def _is_locked(path: Path) -> bool:
    from alignment.runlock import is_locked

    return bool(is_locked(path))


def run_state(run_dir: str | Path) -> State:
    """Whether the run in ``run_dir`` is running, interrupted or finished (module docstring)."""
    run_dir = Path(run_dir)
    if (run_dir / DONE).exists() or SegmentStore(run_dir).closed():
        return State.FINISHED
    if _is_locked(run_dir):
        return State.RUNNING
    return State.INTERRUPTED


def percent(fraction: float) -> str:
    """An accuracy (a fraction) as the one unit every summary uses: ``"97.50 %"``."""
    return f"{100 * fraction:.2f} %"


def _last_finite(da: xr.DataArray) -> np.ndarray:
    """Per layer, the value at the last step where it is finite (NaN if never)."""
    values = np.moveaxis(np.asarray(da.transpose("step", ...).values, dtype=float), 0, -1)
    finite = np.isfinite(values)
    last = np.where(finite.any(-1), values.shape[-1] - 1 - np.argmax(finite[..., ::-1], -1), 0)
    picked = np.take_along_axis(values, last[..., None], -1)[..., 0]
    return np.where(finite.any(-1), picked, np.nan)


def _accuracy(ds: xr.Dataset, state: State | None) -> str | None:
    if "test_accuracy" not in ds:
        return None
    values = np.asarray(ds["test_accuracy"].values, dtype=float)
    finite = np.flatnonzero(np.isfinite(values))
    if not finite.size:
        return None
    last, best = values[finite[-1]], np.nanmax(values)
    if state in (None, State.FINISHED):
        return f"test accuracy: final {percent(last)}  best {percent(best)}"
    step = int(ds["step"].values[finite[-1]])
    return f"test accuracy: last recorded {percent(last)} (step {step})  best {percent(best)}"


def _overhead(ds: xr.Dataset) -> str | None:
    """The recording time (variable ``record_seconds``) and, where the record has the run's
    wall-clock time (``elapsed_seconds``), the overhead: recording time over the rest of the
    run's time (training, evaluation, writing) up to the last record."""
    if "record_seconds" not in ds:
        return None
    seconds = np.asarray(ds["record_seconds"].values, dtype=float)
    seconds = seconds[np.isfinite(seconds)]
    if not seconds.size:
        return None
    line = (
        f"recording: {seconds.sum():.2f} s over {seconds.size} records "
        f"({1000 * seconds.mean():.1f} ms per record)"
    )
    if "elapsed_seconds" in ds:
        elapsed = np.asarray(ds["elapsed_seconds"].values, dtype=float)
        elapsed = elapsed[np.isfinite(elapsed)]
        rest = elapsed.max() - seconds.sum() if elapsed.size else 0.0
        if rest > 0:
            line += f", {100 * seconds.sum() / rest:.0f} % overhead over {rest:.1f} s of the run"
    return line


def _describe_layer(ds: xr.Dataset, i: int, name: str) -> str:
    """``name`` with its type and shape where the record describes its layers, e.g.
    ``0 Conv2d 1→8 3×3`` or ``fc1 Linear 784→512``."""
    coords = ds["layer"].coords
    if "layer_type" not in coords:
        return name
    parts = [name, str(coords["layer_type"].values[i])]
    if "layer_fan_in" in coords and "layer_fan_out" in coords:
        parts.append(
            f"{int(coords['layer_fan_in'].values[i])}→{int(coords['layer_fan_out'].values[i])}"
        )
    kernel = str(coords["layer_kernel_size"].values[i]) if "layer_kernel_size" in coords else ""
    if kernel:
        parts.append(kernel)
    return " ".join(parts)


def summarize(ds: xr.Dataset, title: str = "", state: State | None = None) -> str:
    """Run state and last recorded step, test accuracy (final and best, in %; for a run that is
    not finished, its last recorded value), the recording time, and each layer's last feedback
    and gradient alignment. ``state``: from :func:`run_state` (None: not known, e.g. a Dataset
    in memory; then the last value reads as final)."""
    lines = [title] if title else []
    where = f"rule {ds.attrs.get('rule', '?')}  seed {ds.attrs.get('seed', '?')}"
    if state is not None:
        steps = np.asarray(ds["step"].values) if "step" in ds.dims else np.array([])
        last = f"last recorded step {int(steps.max())}" if steps.size else "no step recorded yet"
        where += f"  {state.value}, {last}"
    lines.append(where)
    for line in (_accuracy(ds, state), _overhead(ds)):
        if line:
            lines.append(f"  {line}")
    headers = {
        "feedback_alignment": "feedback_alignment (°)",
        "feedback_alignment_predicted": "predicted (°)",
        "grad_alignment": "grad_alignment (°)",
    }
    columns = [name for name in headers if name in ds]
    if "layer" in ds.dims and columns:
        finals = {name: _last_finite(ds[name]) for name in columns}
        header = f"  {'layer':<28}" + "".join(f"{headers[name]:>24}" for name in columns)
        lines.append(header)
        for i, layer in enumerate(ds["layer"].values):
            cells = "".join(f"{finals[name][i]:>24.2f}" for name in columns)
            lines.append(f"  {_describe_layer(ds, i, str(layer)):<28}{cells}")
    return "\n".join(lines)


def run_dirs(path: str | Path) -> list[Path]:
    """``path`` if it is a run folder (with a ``record.zarr``, or a trainer's ``config.yaml``),
    else every run folder below it, sorted."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; give a run folder or a folder of runs")
    if (path / RECORD).is_dir() or (path / "config.yaml").is_file():
        return [path]
    found = {p.parent for p in path.rglob(RECORD) if p.is_dir()}
    found |= {p.parent for p in path.rglob("config.yaml") if RECORD not in p.parts}
    found = {p for p in found if not any(q in found for q in p.parents)}  # not runs in runs
    if not found:
        raise FileNotFoundError(
            f"no runs under {path}: a run folder holds a record.zarr (Recorder) or a config.yaml "
            "(alignment train); give a run folder or a folder above runs"
        )
    return sorted(found)


def run_summary(run_dir: str | Path) -> str:
    """:func:`summarize` of the run in ``run_dir`` with its state, titled ``== run_dir``."""
    from alignment.recording import open_run

    run_dir = Path(run_dir)
    state = run_state(run_dir)
    if not SegmentStore(run_dir).exists():
        return f"== {run_dir}\n{state.value}, nothing recorded yet (no {RECORD})"
    return summarize(open_run(run_dir), title=f"== {run_dir}", state=state)
