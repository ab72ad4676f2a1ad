"""Reading records: :func:`open_run`, :func:`open_raw`, :func:`open_runs` (combined by
:func:`alignment.recording.combine.combine_runs`, also for Datasets in memory), :func:`to_netcdf`.

:func:`open_run` and :func:`open_raw` read one run into memory (numpy-backed) by default;
``lazy=True`` opens it with dask instead. :func:`open_runs` stacks the runs along a ``run`` dim
(see :mod:`alignment.recording.combine`) and is lazy by default: every data variable of every
run is a dask array, one chunk per run and variable (size 1 along ``run``), and nothing is read
until a result is computed (``.compute()``, ``.values``, plotting, writing). Opening reads only
what the stack needs: the run attrs (rule, seed, options, tags, config), the coordinates
(``step``, ``epoch``, ``layer``, …) and the arrays' metadata. A regrouped grid
(:func:`alignment.recording.grid`) refers to the same chunks; grid points without a run are
lazy NaN blocks, never allocated unless used. A reduction over seeds (``grid(ds).mean("seed")``,
:func:`alignment.analyses.seed_statistics`) then streams the runs through memory a few chunks
at a time (dask's threaded scheduler, one thread per CPU): the data held at once does not grow
with the number of runs; what does is the bookkeeping (the Datasets' coordinates and attrs, one
dask task per run and variable, ~0.1–0.3 MiB per run). Select the variables you need before indexing
(``ds[["test_accuracy"]]``) and call ``.compute()`` on the small reduced result, not on the
combined Dataset (that would load it all, as ``lazy=False`` does). ``open_runs(...,
lazy=False)`` reads everything into memory: the same Dataset, numpy-backed
(``xr.testing.assert_identical(lazy.compute(), eager)``).

A lazy Dataset reads the run's segment files when computed: a run that is still being recorded
may have compacted them away in between (``Recorder.close``); reopen it then.

Eager Datasets are checked with :func:`alignment.recording.schema.validate`. Lazy ones are
checked for structure only (attrs, coordinates, dims and attributes of every variable): the
range check of angle variables would read every value; the recorder already ran it on every
segment it wrote. Each function works on one run at a time and combines at the end.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from alignment.recording.combine import combine_runs
from alignment.recording.integrity import open_each
from alignment.recording.schema import (
    RAW_QUANTITIES,
    RAW_STEP,
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
    """'h5netcdf' (NetCDF-4) when h5netcdf (and so h5py) is installed, else 'scipy' (NetCDF-3,
    64-bit offset)."""
    try:
        import h5netcdf  # noqa: F401
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


def open_runs(
    paths_or_glob: PathLike | Iterable[PathLike],
    *,
    raw: bool = False,
    lazy: bool = True,
    factors: Sequence[str] = (),
    on_damaged: Literal["raise", "skip"] = "raise",
) -> xr.Dataset:
    """Several runs as one Dataset stacked along a leading dim ``run``, with their factors as
    coordinates on it (rule, seed, rule options, user tags, and the config fields named in
    ``factors`` as dotted keys such as ``"optim.lr"``): :func:`combine_runs` of :func:`open_run`
    of each path (a list, or a glob pattern such as ``"out/mnist_*/seed*"``). Regroup with
    :func:`alignment.recording.grid`, tabulate with :func:`alignment.recording.tidy`.

    Lazy by default (``lazy=False`` reads everything into memory): data variables are dask
    arrays with one chunk per run, read when a result is computed; compute reduced results
    (``an.accuracy_table(ds).compute()``), not the whole Dataset. See the module docstring.

    A damaged run raises an error naming its file (``on_damaged="raise"``); with
    ``on_damaged="skip"`` every run's files are verified first and the damaged ones are left
    out, each with a warning naming it (:func:`alignment.recording.integrity.open_each`).
    """
    paths = _paths(paths_or_glob)
    datasets, paths = open_each(paths, lambda p: open_run(p, raw=raw, lazy=lazy), on_damaged)
    return combine_runs(datasets, [str(p) for p in paths], factors=factors)
