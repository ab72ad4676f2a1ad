"""Reading records: :func:`open_run`, :func:`open_raw`, :func:`open_runs` (and its core
:func:`combine_runs`, for Datasets in memory), :func:`to_netcdf`.

Everything is read eagerly into memory (numpy-backed Datasets) and checked with
:func:`alignment.recording.schema.validate`. Each function works on one run at a time and
combines at the end, so it can become lazy (dask) without changing its interface.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from alignment.recording.schema import RAW_QUANTITIES, REQUIRED_ATTRS, VARIABLES, validate
from alignment.recording.store import SegmentStore, run_path

PathLike = str | os.PathLike


def _order(name: str, layers: list[str]) -> tuple[int, int, int]:
    """Schema order: the schema's variables, then raw tensors by quantity and forward order."""
    if name in VARIABLES:
        return (0, list(VARIABLES).index(name), 0)
    quantity, _, layer = name.partition("__")
    if quantity in RAW_QUANTITIES:
        where = layers.index(layer) if layer in layers else len(layers)
        return (2, list(RAW_QUANTITIES).index(quantity), where)
    return (1, 0, 0)


def _merge(parts: list[xr.Dataset], attrs: dict[str, Any]) -> xr.Dataset:
    ds = xr.merge(parts, compat="equals", join="outer", combine_attrs="drop_conflicts")
    layers = [str(v) for v in ds["layer"].values] if "layer" in ds.coords else []
    ds = ds[sorted(map(str, ds.data_vars), key=lambda name: _order(name, layers))]
    ds.attrs = dict(attrs)
    return ds


def open_run(run_dir: PathLike, *, raw: bool = False) -> xr.Dataset:
    """The record of one run: static part (probe, B·Bᵀ spectrum, attrs) and every step record.

    ``raw=True`` adds the raw tensors (dim ``raw_step``). Runs that crashed read up to their last
    flush. Raises FileNotFoundError if ``run_dir`` holds no record.
    """
    store = SegmentStore(run_dir)
    static = store.read_static()
    parts = [static]
    main = store.read("main")
    if main is not None:
        parts.append(main)
    if raw:
        records = store.read("raw")
        if records is not None:
            parts.append(records)
    return validate(_merge(parts, static.attrs))


def open_raw(run_dir: PathLike) -> xr.Dataset:
    """The raw tensors of one run alone (dim ``raw_step``, coordinate ``raw_epoch``), with the run
    attrs and the layer coordinate; empty of data variables when none were recorded."""
    store = SegmentStore(run_dir)
    static = store.read_static()
    records = store.read("raw")
    base = xr.Dataset(coords={"layer": static["layer"]})
    return validate(_merge([base] if records is None else [base, records], static.attrs))


def netcdf_engine() -> str:
    """'h5netcdf' (NetCDF-4) when h5py is installed, else 'scipy' (NetCDF-3, 64-bit offset)."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        return "scipy"
    return "h5netcdf"


def to_netcdf(
    run_dir: PathLike, path: PathLike | None = None, *, raw: bool = False, engine: str | None = None
) -> Path:
    """Export a run to one NetCDF file (default ``run_dir/record.nc``), atomically.

    ``engine``: 'h5netcdf' (NetCDF-4, needs h5py) or 'scipy' (NetCDF-3: integers stored as
    int32); default :func:`netcdf_engine`.
    """
    ds = open_run(run_dir, raw=raw)
    engine = netcdf_engine() if engine is None else engine
    target = Path(path) if path is not None else run_path(run_dir) / "record.nc"
    tmp = target.with_name(f".tmp-{target.name}")
    try:
        ds.to_netcdf(tmp, engine=engine)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------------- combining runs
def _paths(paths_or_glob: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths_or_glob, str | os.PathLike):
        text = os.fspath(paths_or_glob)
        if glob.has_magic(text):
            found = sorted(glob.glob(text))
            if not found:
                raise FileNotFoundError(f"open_runs: no run matches {text!r}")
            return [Path(p) for p in found]
        return [Path(text)]
    paths = [Path(p) for p in paths_or_glob]
    if not paths:
        raise ValueError("open_runs: no runs given")
    return paths


_MISSING = object()


def _option_dims(options: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Options with at least two distinct values among the runs that have them → per-run values
    (numbers as float with NaN where a run's rule has no such option, strings with '')."""
    keys = sorted({key for opts in options for key in opts})
    dims: dict[str, list[Any]] = {}
    for key in keys:
        values = [opts.get(key, _MISSING) for opts in options]
        present = [v for v in values if v is not _MISSING and v is not None]
        if len({json.dumps(v, sort_keys=True) for v in present}) < 2:
            continue
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
        if numeric:
            dims[key] = [
                float(v) if v is not _MISSING and v is not None else np.nan for v in values
            ]
        else:
            dims[key] = [str(v) if v is not _MISSING and v is not None else "" for v in values]
    return dims


def _combined_attrs(datasets: list[xr.Dataset], paths: list[Path], run_dims: list[str]) -> dict:
    attrs: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for ds in datasets for k in ds.attrs))
    for key in keys:
        values = [ds.attrs.get(key) for ds in datasets]
        same = all(json.dumps(v, default=str) == json.dumps(values[0], default=str) for v in values)
        if same:
            attrs[key] = values[0]
        elif key in ("config", "rule_options"):
            attrs[key] = json.dumps([json.loads(v) if v is not None else None for v in values])
        else:
            attrs[key] = json.dumps(values, default=str)
    for key in REQUIRED_ATTRS:
        attrs.setdefault(key, "")
    attrs["runs"] = json.dumps([str(p) for p in paths])
    attrs["run_dims"] = json.dumps(run_dims)
    return attrs


def _unify_layers(datasets: list[xr.Dataset]) -> list[xr.Dataset]:
    """Reindex every run on the union of layer names, in first-seen (forward) order."""
    layers = list(dict.fromkeys(str(n) for ds in datasets for n in ds["layer"].values))
    return [
        ds.reindex(layer=layers) if list(ds["layer"].values) != layers else ds for ds in datasets
    ]


def _epochs(datasets: list[xr.Dataset]) -> xr.DataArray | None:
    """The common epoch coordinate over the union of steps, or None if the runs disagree."""
    mapping: dict[int, int] = {}
    for ds in datasets:
        if "epoch" not in ds.coords:
            continue
        for step, epoch in zip(
            ds["step"].values.tolist(), ds["epoch"].values.tolist(), strict=True
        ):
            if mapping.setdefault(step, epoch) != epoch:
                return None
    steps = sorted(mapping)
    return xr.DataArray(np.array([mapping[s] for s in steps]), dims="step", coords={"step": steps})


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _axis(values: list[Any]) -> list[Any]:
    """Distinct values, sorted, NaN (an option the rule does not have) last."""
    distinct = sorted({v for v in values if not _is_nan(v)})
    return distinct + ([math.nan] if any(_is_nan(v) for v in values) else [])


def _grid(combined: xr.Dataset, run_values: dict[str, list[Any]]) -> xr.Dataset:
    """Scatter the ``run`` dim of ``combined`` onto a grid of the ``run_values`` dims.

    Grid points that no run has are NaN (integer variables become float then). Unlike pandas'
    MultiIndex unstack this keeps NaN as a coordinate value (runs whose rule lacks an option).
    """
    axes = {dim: _axis(values) for dim, values in run_values.items()}
    shape = tuple(len(axis) for axis in axes.values())
    positions = [
        [
            next(i for i, a in enumerate(axes[dim]) if a == v or (_is_nan(a) and _is_nan(v)))
            for v in values
        ]
        for dim, values in run_values.items()
    ]
    flat = np.ravel_multi_index(positions, shape)
    complete = len(set(flat.tolist())) == math.prod(shape)

    def scatter(var: xr.Variable) -> xr.Variable:
        var = var.transpose("run", ...)
        values = np.asarray(var.values)
        if not complete and values.dtype.kind in "iub":
            values = values.astype(np.float64)
        fill = math.nan if values.dtype.kind in "fc" else values.dtype.type()
        out = np.full((math.prod(shape), *values.shape[1:]), fill, dtype=values.dtype)
        out[flat] = values
        dims = (*axes, *var.dims[1:])
        return xr.Variable(dims, out.reshape(shape + values.shape[1:]), var.attrs)

    data_vars = {
        name: scatter(da.variable) if "run" in da.dims else da.variable
        for name, da in combined.data_vars.items()
    }
    coords = {
        name: scatter(da.variable) if "run" in da.dims else da.variable
        for name, da in combined.coords.items()
        if name != "run"
    }
    coords |= {dim: np.array(axis) for dim, axis in axes.items()}
    return xr.Dataset(data_vars, coords)


def open_runs(paths_or_glob: PathLike | Iterable[PathLike], *, raw: bool = False) -> xr.Dataset:
    """Several runs as one Dataset with new leading dims ``rule``, ``seed`` and any rule option
    whose value differs between the runs (e.g. ``k``, ``density``): :func:`combine_runs` of
    :func:`open_run` of each path (a list, or a glob pattern such as ``"out/mnist_*/seed*"``).
    """
    paths = _paths(paths_or_glob)
    return combine_runs([open_run(p, raw=raw) for p in paths], [str(p) for p in paths])


def combine_runs(datasets: list[xr.Dataset], names: list[str] | None = None) -> xr.Dataset:
    """Single-run Datasets (as :func:`open_run` returns them) as one Dataset with new leading
    dims ``rule``, ``seed`` and any rule option whose value differs between the runs.

    Runs are aligned by outer join: steps, layers and samples that some runs lack are NaN there,
    as are (rule, seed, option) combinations that no run has. Options a rule does not have are
    NaN (numbers) or '' (strings) on that rule's runs. Dataset attrs equal in every run are kept;
    the others become JSON lists in run order (``runs`` lists the ``names``, default the run
    paths or ``run0``, ``run1``, …; ``run_dims`` lists the new dims).
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("combine_runs: no runs given")
    paths = [Path(n) for n in (names or [f"run{i}" for i in range(len(datasets))])]
    for path, ds in zip(paths, datasets, strict=True):
        if "run_dims" in ds.attrs:
            raise ValueError(f"combine_runs: {path} already combines runs; combine single runs")
    rules = [str(ds.attrs["rule"]) for ds in datasets]
    seeds = [int(ds.attrs["seed"]) for ds in datasets]
    options = _option_dims([json.loads(ds.attrs["rule_options"]) for ds in datasets])
    run_dims = ["rule", "seed", *options]
    seen: dict[str, Path] = {}
    for i, path in enumerate(paths):
        key = (rules[i], seeds[i], *(values[i] for values in options.values()))
        if repr(key) in seen:
            raise ValueError(
                f"open_runs: runs {seen[repr(key)]} and {path} have the same {tuple(run_dims)} "
                f"= {key}; give them different seeds (Recorder(seed=...)) or combine them "
                "separately"
            )
        seen[repr(key)] = path
    attrs = _combined_attrs(datasets, paths, run_dims)
    datasets = _unify_layers(datasets)
    epochs = _epochs(datasets)
    prepared = []
    for ds in datasets:
        ds = ds.copy()
        ds.attrs = {}
        if epochs is not None and "epoch" in ds.coords:
            ds = ds.drop_vars("epoch")
        added = [d for d in ds.dims if d not in ds.indexes]
        prepared.append(ds.assign_coords({d: np.arange(ds.sizes[d]) for d in added}))
    combined = xr.concat(
        prepared,
        dim="run",
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
        combine_attrs="override",
    )
    combined = _grid(combined, {"rule": rules, "seed": seeds, **options})
    added = {d for ds in datasets for d in ds.dims if d not in ds.indexes}
    combined = combined.drop_vars([d for d in added if d in combined.coords])
    if epochs is not None:
        combined = combined.assign_coords(epoch=epochs.reindex(step=combined["step"]))
    combined.attrs = attrs
    return validate(combined)
