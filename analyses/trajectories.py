"""Trajectories over training: epoch-level resampling and the per-layer alignment metrics."""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import xarray as xr

from alignment.analyses._common import label_step_coords, relative_depth

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
    if _is_lazy(obj):
        out = _per_epoch_lazy(obj, how)
    else:
        source = obj
        if isinstance(obj, xr.Dataset):  # (first/last fail on variables without step)
            source = obj.drop_vars([n for n, v in obj.data_vars.items() if "step" not in v.dims])
        out = getattr(source.groupby("epoch"), how)(skipna=True, keep_attrs=True)
    out = out.transpose(
        *[("epoch" if d == "step" else d) for d in obj.dims if d in out.dims or d == "step"]
    )
    if isinstance(obj, xr.Dataset):
        static = [n for n, v in obj.data_vars.items() if "step" not in v.dims]
        out = out.assign({n: obj[n] for n in static})
        out.attrs = dict(obj.attrs)
    return label_step_coords(out)


def _is_lazy(obj: xr.Dataset | xr.DataArray) -> bool:
    variables = obj.data_vars.values() if isinstance(obj, xr.Dataset) else [obj]
    return any(v.chunks is not None for v in variables)


def _reduce_epochs(
    values: np.ndarray, order: np.ndarray, starts: np.ndarray, how: How
) -> np.ndarray:
    """Reduce the last axis group by group: ``values[..., order]`` split at ``starts``; the first
    or last non-NaN value of each group, or the mean of its non-NaN values (NaN if none)."""
    values = np.asarray(values)[..., order]
    bounds = [*starts.tolist(), values.shape[-1]]
    out = np.full((*values.shape[:-1], len(starts)), np.nan, dtype=values.dtype)
    for g in range(len(starts)):
        block = values[..., bounds[g] : bounds[g + 1]]
        finite = ~np.isnan(block)
        found = finite.any(axis=-1)
        if how == "mean":
            total = np.where(finite, block, 0.0).sum(axis=-1)
            out[..., g] = np.where(found, total / np.maximum(finite.sum(axis=-1), 1), np.nan)
            continue
        at = finite.argmax(axis=-1)
        if how == "last":
            at = block.shape[-1] - 1 - finite[..., ::-1].argmax(axis=-1)
        picked = np.take_along_axis(block, at[..., None], axis=-1)[..., 0]
        out[..., g] = np.where(found, picked, np.nan)
    return out


def _per_epoch_lazy(obj: T, how: How) -> T:
    """:func:`per_epoch` of dask-backed data: one task per chunk (a run's whole record) instead of
    xarray's groupby, which would add a task per epoch and chunk."""
    epochs = np.asarray(obj["epoch"].values)
    order = np.argsort(epochs, kind="stable")
    labels, starts = np.unique(epochs[order], return_index=True)

    def reduce(da: xr.DataArray) -> xr.DataArray:
        if da.chunks is None or da.dtype.kind != "f":
            return getattr(da.groupby("epoch"), how)(skipna=True, keep_attrs=True)
        out = xr.apply_ufunc(
            _reduce_epochs,
            da,
            kwargs={"order": order, "starts": starts, "how": how},
            input_core_dims=[["step"]],
            output_core_dims=[["epoch"]],
            dask="parallelized",
            output_dtypes=[da.dtype],
            dask_gufunc_kwargs={"output_sizes": {"epoch": labels.size}, "allow_rechunk": True},
            keep_attrs=True,
        )
        return out.assign_coords(epoch=labels)

    if isinstance(obj, xr.DataArray):
        return reduce(obj)
    stepped = [name for name, v in obj.data_vars.items() if "step" in v.dims]
    return obj.drop_dims("step").assign({name: reduce(obj[name]) for name in stepped})


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
