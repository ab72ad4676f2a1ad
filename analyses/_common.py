"""Small helpers shared by the analyses: attrs, run dims, reductions along ``step``."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import xarray as xr

T = TypeVar("T", xr.Dataset, xr.DataArray)

LABEL_KEYS = ("long_name", "units", "description")


def labelled(da: xr.DataArray, long_name: str, units: str, description: str = "") -> xr.DataArray:
    """``da`` with its ``long_name``, ``units`` and ``description`` attrs set."""
    out = da.copy(deep=False)
    out.attrs = {**da.attrs, "long_name": long_name, "units": units}
    out.attrs["description"] = description or da.attrs.get("description", long_name)
    return out


def label_attrs(source: Mapping[Hashable, object]) -> dict[str, object]:
    """The label attrs (long_name, units, description) of ``source``."""
    return {key: source[key] for key in LABEL_KEYS if key in source}


def run_dims(ds: xr.Dataset | xr.DataArray) -> tuple[str, ...]:
    """The dims that combined runs added (``run`` for a run stack; ``rule``, ``seed``, … for a
    grid), from attr ``run_dims``."""
    text = ds.attrs.get("run_dims")
    if not text:
        return ()
    return tuple(str(dim) for dim in json.loads(str(text)))


def option_dims(ds: xr.Dataset | xr.DataArray) -> tuple[str, ...]:
    """The run dims of a grid that are not ``rule`` and ``seed`` (rule options, tags, config
    fields); none for a run stack (dim ``run``)."""
    return tuple(dim for dim in run_dims(ds) if dim not in ("rule", "seed", "run"))


def _last_finite(values: np.ndarray) -> np.ndarray:
    """numpy kernel of :func:`last_finite` along the last axis."""
    finite = np.isfinite(values)
    at = values.shape[-1] - 1 - finite[..., ::-1].argmax(axis=-1)
    picked = np.take_along_axis(values, at[..., None], axis=-1)[..., 0]
    return np.where(finite.any(axis=-1), picked, np.nan)


def select_variables(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    """The variables ``names`` of ``ds`` that it has, and ``loss`` (what tells grid points with
    a run from those without), with every coordinate and attr. Selecting first keeps the other
    analyses from indexing (and, on lazy runs, adding tasks for) variables nobody reads."""
    keep = [n for n in (*names, "loss") if n in ds.data_vars]
    return ds[list(dict.fromkeys(keep))]


def last_finite(da: xr.DataArray, dim: str = "step") -> xr.DataArray:
    """The value at the last position along ``dim`` where ``da`` is finite (NaN if never)."""
    if dim not in da.dims:
        return da
    if da.chunks is not None and da.dtype.kind == "f" and da.sizes[dim]:
        # dask (lazy runs): one task per chunk; no index to compute first
        out = xr.apply_ufunc(
            _last_finite,
            da,
            input_core_dims=[[dim]],
            dask="parallelized",
            output_dtypes=[da.dtype],
            dask_gufunc_kwargs={"allow_rechunk": True},
            keep_attrs=True,
        )
        return out.drop_vars(_coords_on(da, dim), errors="ignore")
    finite = np.isfinite(da)
    index = (da.sizes[dim] - 1 - finite.isel({dim: slice(None, None, -1)}).argmax(dim)).compute()
    picked = da.isel({dim: index}).where(finite.any(dim))
    return picked.drop_vars([dim, *_coords_on(da, dim)], errors="ignore")


def _coords_on(da: xr.DataArray, dim: str) -> list[Hashable]:
    return [name for name, coord in da.coords.items() if dim in coord.dims and name != dim]


def relative_depth(layers: xr.DataArray | np.ndarray | list[str]) -> xr.DataArray:
    """Relative depth of each layer, 0 (first) to 1 (classifier), on a ``layer`` dim."""
    names = np.asarray(layers.values if isinstance(layers, xr.DataArray) else layers)
    n = len(names)
    values = np.arange(n) / (n - 1) if n > 1 else np.zeros(n)
    return xr.DataArray(
        values,
        dims="layer",
        coords={"layer": names},
        attrs={
            "long_name": "relative depth",
            "units": "1",
            "description": "Layer index in forward order / (number of layers − 1).",
        },
    )


def label_step_coords(obj: T) -> T:
    """Give the ``step``/``epoch`` coordinates long_name and units (axis labels)."""
    coords = {
        "step": ("training step", "Optimizer steps before the record."),
        "epoch": ("epoch", "Epoch (0 = before training)."),
    }
    for name, (long_name, description) in coords.items():
        if name in obj.coords:
            obj[name].attrs.update(long_name=long_name, units="1", description=description)
    return obj


def finite_steps(da: xr.DataArray) -> np.ndarray:
    """The steps at which ``da`` has at least one finite value."""
    other = [d for d in da.dims if d != "step"]
    mask = np.isfinite(da).any(other) if other else np.isfinite(da)
    return np.asarray(da["step"].values[np.asarray(mask.values)])
