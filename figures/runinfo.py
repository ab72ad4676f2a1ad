"""What a figure needs to know about its runs, read from the records themselves (attrs and
coordinates, never ``config.yaml``): the data set each run trained on, how many seeds and probe
samples a figure pools, and the layer coordinates to carry into a figure's Dataset. Own-loop
runs (:class:`alignment.Recorder` without a trainer config) work: their data set comes from a
tag ``data`` (``Recorder(..., tags={"data": "mnist5k"})``) or is unknown."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from alignment.analyses._common import run_dims

DATASET_TITLES = {
    "mnist": "MNIST",
    "mnist5k": "MNIST-5k",
    "digits": "digits (8×8)",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "imagenet": "ImageNet",
}
"""Display names of the bundled data sets; others are shown as named."""

LAYER_COORDS = ("layer_type", "layer_fan_in", "layer_fan_out", "layer_kernel_size")


def _per_run(ds: xr.Dataset, key: str) -> list[Any]:
    """The values of a JSON attr, one per run (a combined attr is a list where runs differ)."""
    text = ds.attrs.get(key)
    if text is None or text == "":
        return [{}]
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return [{}]
    combined = bool(run_dims(ds)) or "runs" in ds.attrs
    if combined and isinstance(value, list):
        return value
    return [value]


def dataset_names(ds: xr.Dataset) -> list[str]:
    """The data set of every run, sorted, one entry per distinct name: the trainer config's
    ``data.name``, else the tag ``data`` or ``dataset``; '' where a run names none."""
    configs = _per_run(ds, "config")
    tags = _per_run(ds, "tags")
    n = max(len(configs), len(tags))
    names = set()
    for i in range(n):
        config = configs[i if len(configs) > 1 else 0]
        tag = tags[i if len(tags) > 1 else 0]
        data = config.get("data", {}) if isinstance(config, dict) else {}
        name = (
            data.get("name") if isinstance(data, dict) else data if isinstance(data, str) else None
        )
        if not name and isinstance(tag, dict):
            name = tag.get("data") or tag.get("dataset")
        names.add(str(name or ""))
    return sorted(names)


def dataset_title(names: list[str]) -> str:
    """'MNIST-5k' for ``["mnist5k"]``; '' when no run names its data set."""
    return ", ".join(DATASET_TITLES.get(n, n) for n in names if n)


def count(values: Any) -> str:
    """'3 seeds' style counts: the distinct numbers in ``values`` ('2–3' where they differ)."""
    finite = np.asarray(values, dtype=float).ravel()
    finite = sorted({int(v) for v in finite[np.isfinite(finite) & (finite > 0)]})
    if not finite:
        return "0"
    return str(finite[0]) if len(finite) == 1 else f"{finite[0]}–{finite[-1]}"


def seed_count(ds: xr.Dataset) -> str:
    """Seeds per rule in a grid (rule × seed …): e.g. '3' or '1–3'."""
    if "seed" not in ds.dims:
        return "1"
    presence = _presence(ds)
    other = [d for d in presence.dims if d not in ("rule", "seed")]
    per_rule = presence.any(other).sum("seed") if other else presence.sum("seed")
    return count(per_rule.values)


def _presence(ds: xr.Dataset) -> xr.DataArray:
    name = next(
        (n for n in ("loss", *ds.data_vars) if n in ds.data_vars and "step" in ds[n].dims), None
    )
    if name is None:
        name = next(iter(ds.data_vars))
    da = ds[name]
    lead = [d for d in da.dims if d in ("rule", "seed") or d in run_dims(ds)]
    return da.notnull().any([d for d in da.dims if d not in lead]).compute()


def layer_coords(source: xr.Dataset, out: xr.Dataset) -> xr.Dataset:
    """``out`` with the layer-describing coordinates of ``source`` (module type, fan-in/out,
    kernel size) where they are the same for every run."""
    coords = {
        name: source[name].variable
        for name in LAYER_COORDS
        if name in source.coords and source[name].dims == ("layer",) and "layer" in out.dims
    }
    if not coords:
        return out
    aligned = xr.Dataset(coords=coords | {"layer": source["layer"].values})
    return out.assign_coords(
        {name: aligned[name].sel(layer=out["layer"].values).variable for name in coords}
    )
