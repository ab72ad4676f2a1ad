"""Trajectories over training: epoch-level resampling and the per-layer alignment metrics."""

from __future__ import annotations

from typing import Literal, TypeVar

import xarray as xr

from analyses._common import label_step_coords, relative_depth

T = TypeVar("T", xr.Dataset, xr.DataArray)

How = Literal["first", "last", "mean"]

ALIGNMENT_VARIABLES = ("feedback_alignment", "feedback_norm_ratio", "grad_alignment")


def per_epoch(obj: T, *, how: How = "first") -> T:
    """Resample ``step`` to ``epoch``: the first finite value recorded in each epoch (the paper
    logs at the start of every epoch; epoch E = the number of epochs trained), the last one, or
    the mean over the epoch's records. Variables without ``step`` are kept; attrs are kept."""
    if "step" not in obj.dims:
        return obj
    if "epoch" not in obj.coords or obj["epoch"].dims != ("step",):
        raise ValueError(
            "per_epoch needs the epoch coordinate on step (runs with different steps per epoch "
            "cannot share one; resample them one at a time)"
        )
    if how not in ("first", "last", "mean"):
        raise ValueError(f"how must be 'first', 'last' or 'mean', got {how!r}")
    grouped = obj.groupby("epoch")
    out = getattr(grouped, how)(skipna=True, keep_attrs=True)
    out = out.transpose(
        *[("epoch" if d == "step" else d) for d in obj.dims if d in out.dims or d == "step"]
    )
    if isinstance(obj, xr.Dataset):
        static = [n for n, v in obj.data_vars.items() if "step" not in v.dims]
        out = out.assign({n: obj[n] for n in static})
        out.attrs = dict(obj.attrs)
    return label_step_coords(out)


def with_depth(obj: T) -> T:
    """``obj`` with a ``depth`` coordinate (relative depth, 0 to 1) on its ``layer`` dim."""
    if "layer" not in obj.dims:
        return obj
    return obj.assign_coords(depth=relative_depth(obj["layer"]))


def alignment_trajectories(ds: xr.Dataset, *, how: How = "first") -> xr.Dataset:
    """Per layer and epoch: feedback alignment, its norm ratio and gradient alignment (those
    recorded), resampled with :func:`per_epoch`, with a ``depth`` coordinate on ``layer``."""
    names = [n for n in ALIGNMENT_VARIABLES if n in ds]
    if not names:
        raise ValueError(f"alignment_trajectories: the Dataset has none of {ALIGNMENT_VARIABLES}")
    out = per_epoch(ds[names], how=how)
    out.attrs = dict(ds.attrs)
    return with_depth(out)
