"""Small helpers shared by the analyses: attrs, run dims, reductions along ``step``."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
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
    """The dims that combined runs added (``rule``, ``seed``, options), from attr ``run_dims``."""
    text = ds.attrs.get("run_dims")
    if not text:
        return ()
    return tuple(str(dim) for dim in json.loads(str(text)))


def option_dims(ds: xr.Dataset | xr.DataArray) -> tuple[str, ...]:
    """The run dims that are rule options (everything but ``rule`` and ``seed``)."""
    return tuple(dim for dim in run_dims(ds) if dim not in ("rule", "seed"))


def last_finite(da: xr.DataArray, dim: str = "step") -> xr.DataArray:
    """The value at the last position along ``dim`` where ``da`` is finite (NaN if never)."""
    if dim not in da.dims:
        return da
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
