"""Reading records: :func:`open_run`, :func:`open_raw`, :func:`open_runs` (and its core
:func:`combine_runs`, for Datasets in memory or lazy), :func:`to_netcdf`.

:func:`open_run` and :func:`open_raw` read one run into memory (numpy-backed) by default;
``lazy=True`` opens it with dask instead. :func:`open_runs` is lazy by default: every data
variable of every run is a dask array, one chunk per run and variable (size 1 along ``rule``,
``seed`` and the option dims), and nothing is read until a result is computed (``.compute()``,
``.values``, plotting, writing). Opening reads only what the combined grid needs: the run attrs
(rule, seed, options, config), the coordinates (``step``, ``epoch``, ``layer``, …) and the
arrays' metadata; grid points without a run are lazy NaN blocks, never allocated unless used.
A reduction over seeds (``ds.mean("seed")``, :func:`analyses.seed_statistics`) then streams the
runs through memory a few chunks at a time (dask's threaded scheduler, one thread per CPU): the
data held at once does not grow with the number of runs; what does is the bookkeeping (the
Datasets' coordinates and attrs, one dask task per run and variable, ~0.1–0.3 MiB per run).
Select the variables you need before indexing (``ds[["test_accuracy"]]``) and call
``.compute()`` on the small reduced result, not on the combined Dataset (that would load it all,
as ``lazy=False`` does). ``open_runs(..., lazy=False)`` reads everything into memory, as before:
the same Dataset, numpy-backed (``xr.testing.assert_identical(lazy.compute(), eager)``).

A lazy Dataset reads the run's segment files when computed: a run that is still being recorded
may have compacted them away in between (``Recorder.close``); reopen it then.

Eager Datasets are checked with :func:`alignment.recording.schema.validate`. Lazy ones are
checked for structure only (attrs, coordinates, dims and attributes of every variable): the
range check of angle variables would read every value; the recorder already ran it on every
segment it wrote. Each function works on one run at a time and combines at the end.
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from alignment.recording.integrity import open_each
from alignment.recording.schema import (
    RAW_QUANTITIES,
    RAW_STEP,
    REQUIRED_ATTRS,
    VARIABLES,
    validate,
)
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


def _is_lazy(ds: xr.Dataset | xr.DataArray) -> bool:
    """True if any data variable of ``ds`` is a dask array (not yet read)."""
    variables = ds.data_vars.values() if isinstance(ds, xr.Dataset) else [ds]
    return any(v.chunks is not None for v in variables)


def _validated(ds: xr.Dataset) -> xr.Dataset:
    """:func:`validate` without reading lazy data: the coordinates and attrs as they are, the
    variables' dims and attributes on a stand-in with no steps and no memory (broadcast zeros)."""
    if not _is_lazy(ds):
        return validate(ds)
    frame = validate(xr.Dataset(coords=ds.coords, attrs=ds.attrs))
    empty = {dim: 0 for dim in ("step", RAW_STEP) if dim in ds.dims}
    frame = frame.isel({dim: slice(0, 0) for dim in empty})
    sizes = {**ds.sizes, **empty}
    stand_ins = {
        name: xr.Variable(
            var.dims,
            np.broadcast_to(np.zeros((), var.dtype), tuple(sizes[d] for d in var.dims)),
            var.attrs,
        )
        for name, var in ds.data_vars.items()
    }
    validate(frame.assign(stand_ins))
    return ds


def open_run(run_dir: PathLike, *, raw: bool = False, lazy: bool = False) -> xr.Dataset:
    """The record of one run: static part (probe, B·Bᵀ spectrum, attrs) and every step record.

    ``raw=True`` adds the raw tensors (dim ``raw_step``). Runs that crashed read up to their last
    flush. ``lazy=True``: data variables as dask arrays, read when computed (see the module
    docstring); default: everything read into memory. Raises FileNotFoundError if ``run_dir``
    holds no record.
    """
    store = SegmentStore(run_dir)
    static = store.read_static(lazy=lazy)
    parts = [static]
    main = store.read("main", lazy=lazy)
    if main is not None:
        parts.append(main)
    if raw:
        records = store.read("raw", lazy=lazy)
        if records is not None:
            parts.append(records)
    return _validated(_merge(parts, static.attrs))


def open_raw(run_dir: PathLike, *, lazy: bool = False) -> xr.Dataset:
    """The raw tensors of one run alone (dim ``raw_step``, coordinate ``raw_epoch``), with the run
    attrs and the layer coordinate; empty of data variables when none were recorded. ``lazy``: as
    in :func:`open_run`."""
    store = SegmentStore(run_dir)
    static = store.read_static(lazy=True)
    records = store.read("raw", lazy=lazy)
    base = xr.Dataset(coords={"layer": static["layer"]})
    return _validated(_merge([base] if records is None else [base, records], static.attrs))


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


def _lead(block: np.ndarray, lead: int) -> np.ndarray:
    """``block`` with ``lead`` new leading dims of size 1 (a run's block on the grid)."""
    return block.reshape((1,) * lead + block.shape)


class _Placement:
    """Where each run goes on the grid of the run dims: ``axes`` (dim → values), ``shape``,
    ``flat`` (each run's flat grid index), ``run_at`` (each grid point's run, −1 if none)."""

    def __init__(self, run_values: dict[str, list[Any]]) -> None:
        self.axes = {dim: _axis(values) for dim, values in run_values.items()}
        self.shape = tuple(len(axis) for axis in self.axes.values())
        positions = [
            [
                next(
                    i for i, a in enumerate(self.axes[dim]) if a == v or (_is_nan(a) and _is_nan(v))
                )
                for v in values
            ]
            for dim, values in run_values.items()
        ]
        self.flat = np.ravel_multi_index(positions, self.shape)
        self.complete = len(set(self.flat.tolist())) == math.prod(self.shape)
        self.run_at = np.full(math.prod(self.shape), -1)
        self.run_at[self.flat] = np.arange(len(self.flat))


def _grid(combined: xr.Dataset, placement: _Placement) -> xr.Dataset:
    """Scatter the ``run`` dim of ``combined`` (numpy-backed) onto the grid of the run dims.

    Grid points that no run has are NaN (integer variables become float then). Unlike pandas'
    MultiIndex unstack this keeps NaN as a coordinate value (runs whose rule lacks an option).
    """
    axes, shape, flat = placement.axes, placement.shape, placement.flat

    def scatter(var: xr.Variable) -> xr.Variable:
        var = var.transpose("run", ...)
        values = np.asarray(var.values)
        if not placement.complete and values.dtype.kind in "iub":
            values = values.astype(np.float64)
        fill = math.nan if values.dtype.kind in "fc" else values.dtype.type()
        out = np.full((math.prod(shape), *values.shape[1:]), fill, dtype=values.dtype)
        out[flat] = values
        return xr.Variable((*axes, *var.dims[1:]), out.reshape(shape + values.shape[1:]), var.attrs)

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


def _source(data: Any, zeros: tuple[int, ...]) -> tuple[Any, Any]:
    """(what a grid task takes: ``data``'s one block, the dask array it depends on or None).

    A run's variable that is one read task (a compacted segment: see
    :func:`alignment.recording.store.read_zarr`) is inlined into the grid's task, so the graph
    holds one task per run and variable, not two, and no per-run layer."""
    key = (data.name, *zeros)
    layers = data.dask.layers
    if len(layers) == 1:
        (only,) = layers.values()
        if len(only) == 1:
            task = dict(only).get(key)
            if isinstance(task, tuple) and task and callable(task[0]):
                return task, None
    return key, data


def _lazy_grid(parts: list[xr.Variable | None], placement: _Placement) -> xr.Variable:
    """One variable of every run (None where a run lacks it; runs aligned) as a dask-backed
    Variable with the run dims in front: each grid point's block is its run's one chunk, referred
    to and not copied, or a lazy fill block (NaN; integers become float) where no run is."""
    import dask.array
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    first = next(p for p in parts if p is not None)
    dims, shape = first.dims, first.shape
    dtype = np.result_type(*(p.dtype for p in parts if p is not None))
    gaps = not placement.complete or any(p is None for p in parts)
    if gaps and dtype.kind in "iub":
        dtype = np.dtype(np.float64)
    arrays = []
    for part in parts:
        if part is None:
            arrays.append(None)
            continue
        part = part.transpose(*dims)
        if part.shape != shape:
            raise ValueError(f"combine_runs: runs were not aligned ({part.shape} vs {shape})")
        data = part.data
        if not isinstance(data, dask.array.Array):
            data = dask.array.from_array(np.asarray(data), chunks=shape or ())
        if data.dtype != dtype:
            data = data.astype(dtype)
        if data.numblocks != (1,) * data.ndim:
            data = data.rechunk(shape or ())
        arrays.append(data)
    fill = math.nan if dtype.kind in "fc" else dtype.type()
    filler = dask.array.full(shape, fill, dtype=dtype, chunks=shape or ())
    zeros = (0,) * len(shape)
    lead = len(placement.shape)
    gap = (_lead, (filler.name, *zeros), lead)
    names = [a.name if a is not None else None for a in arrays]
    name = "runs-" + tokenize(names, placement.shape, placement.run_at.tolist(), str(dtype))
    sources = [None if a is None else _source(a, zeros) for a in arrays]
    layer: dict[tuple, tuple] = {}
    for point, run in enumerate(placement.run_at.tolist()):
        where = tuple(int(i) for i in np.unravel_index(point, placement.shape))
        source = sources[run] if run >= 0 else None
        layer[(name, *where, *zeros)] = gap if source is None else (_lead, source[0], lead)
    used = [s[1] for s in sources if s is not None and s[1] is not None]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[*used, filler])
    chunks = tuple((1,) * n for n in placement.shape) + tuple((n,) for n in shape)
    meta = np.empty((0,) * (lead + len(shape)), dtype=dtype)
    data = dask.array.Array(graph, name, chunks, meta=meta)
    return xr.Variable((*placement.axes, *dims), data, first.attrs)


def open_runs(
    paths_or_glob: PathLike | Iterable[PathLike],
    *,
    raw: bool = False,
    lazy: bool = True,
    on_damaged: Literal["raise", "skip"] = "raise",
) -> xr.Dataset:
    """Several runs as one Dataset with new leading dims ``rule``, ``seed`` and any rule option
    whose value differs between the runs (e.g. ``k``, ``density``): :func:`combine_runs` of
    :func:`open_run` of each path (a list, or a glob pattern such as ``"out/mnist_*/seed*"``).

    Lazy by default (``lazy=False`` reads everything into memory): data variables are dask
    arrays with one chunk per run, read when a result is computed; compute reduced results
    (``an.accuracy_table(ds).compute()``), not the whole Dataset. See the module docstring.

    A damaged run raises an error naming its file (``on_damaged="raise"``); with
    ``on_damaged="skip"`` every run's files are verified first and the damaged ones are left
    out, each with a warning naming it (:func:`alignment.recording.integrity.open_each`).
    """
    paths = _paths(paths_or_glob)
    datasets, paths = open_each(paths, lambda p: open_run(p, raw=raw, lazy=lazy), on_damaged)
    return combine_runs(datasets, [str(p) for p in paths])


def combine_runs(datasets: list[xr.Dataset], names: list[str] | None = None) -> xr.Dataset:
    """Single-run Datasets (as :func:`open_run` returns them) as one Dataset with new leading
    dims ``rule``, ``seed`` and any rule option whose value differs between the runs. Lazy
    (dask-backed) runs give a lazy Dataset, one chunk per run along the new dims; numpy-backed
    runs give a numpy-backed one.

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
    # dask-backed variables go onto the grid lazily, run by run; the rest through xr.concat
    lazy = list(
        dict.fromkeys(
            name for ds in prepared for name, var in ds.data_vars.items() if var.chunks is not None
        )
    )
    order = list(dict.fromkeys(name for ds in prepared for name in ds.data_vars))
    parts: dict[str, list[xr.Variable | None]] = {}
    if lazy:
        prepared = list(xr.align(*prepared, join="outer", copy=False))
        parts = {
            name: [ds[name].variable if name in ds.data_vars else None for ds in prepared]
            for name in lazy
        }
        prepared = [ds.drop_vars([n for n in lazy if n in ds.data_vars]) for ds in prepared]
    combined = xr.concat(
        prepared,
        dim="run",
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
        combine_attrs="override",
    )
    placement = _Placement({"rule": rules, "seed": seeds, **options})
    combined = _grid(combined, placement)
    if lazy:
        gridded = {name: _lazy_grid(parts[name], placement) for name in lazy}
        variables = {n: gridded[n] if n in gridded else combined[n].variable for n in order}
        combined = xr.Dataset(variables, coords=combined.coords)
    added = {d for ds in datasets for d in ds.dims if d not in ds.indexes}
    combined = combined.drop_vars([d for d in added if d in combined.coords])
    if epochs is not None:
        combined = combined.assign_coords(epoch=epochs.reindex(step=combined["step"]))
    combined.attrs = attrs
    return _validated(combined)
