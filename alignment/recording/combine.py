"""Combining runs: :func:`combine_runs` stacks runs along a ``run`` dim, :func:`grid` regroups
them into a dense grid over named factors, :func:`tidy` gives a long table for pandas/seaborn.

**The stack.** Every data variable gets a leading dim ``run`` (one entry per run, in the order
given). The ``run`` coordinate holds unique run IDs (the run folders relative to their common
parent, e.g. ``pfa/seed0``); the factors that tell runs apart are coordinates on ``run``: ``rule``,
``seed``, every rule option (``k``, ``density``, ``b_init``, …; NaN or '' where a rule has no
such option), every user tag (``Recorder(..., tags={"wd": "burst"})``) and any config fields asked
for (``factors=["optim.lr"]``, named by their dotted key). Nothing is padded:
``ds.sel(run="pfa/seed0")`` is that run, ``ds.where(ds.rule == "pfa", drop=True)`` its rule,
``ds.groupby("rule")`` works.
Attr ``run_dims`` is ``["run"]``, ``run_factors`` lists the factor coordinates, ``runs`` the run
paths; attrs that differ between runs become JSON lists in run order.

**The grid.** :func:`grid` puts the runs on a dense grid over the factors named (e.g. ``["rule",
"seed"]``): one dim per factor, NaN where no run is. The other factors stay as coordinates on the
fewest grid dims that determine them (``k`` on ``rule`` when each rule has one ``k``); the ``run``
coordinate says which run sits where ('' where none). With no factors named, ``grid`` takes
``rule``, ``seed`` and, in order, every other factor that still tells runs apart (a sweep over
``k`` adds ``k``): the form the analyses work on. The factors must identify the runs uniquely.

**Laziness.** Lazy (dask-backed) runs give a lazy stack, one chunk per run and variable; a grid
of it refers to those chunks (grid points without a run are lazy NaN blocks).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from alignment.recording.schema import REQUIRED_ATTRS

RUN = "run"
_MISSING = object()


# ---------------------------------------------------------------------------------- run IDs
def run_ids(names: Sequence[str]) -> list[str]:
    """Unique IDs of runs named by their paths: each path relative to the common parent of all
    (at least the last part, e.g. ``seed0`` for a single run)."""
    parts = [PurePath(str(name)).parts or (str(name),) for name in names]
    keep = min(len(p) for p in parts) - 1 if parts else 0
    common = 0
    while common < keep and len({p[common] for p in parts}) == 1:
        common += 1
    ids = ["/".join(p[common:]) for p in parts]
    seen: dict[str, int] = {}
    for i, run in enumerate(ids):
        if run in seen:
            raise ValueError(
                f"combine_runs: run {names[seen[run]]!s} is given twice (as {names[i]!s}); "
                "give each run once"
            )
        seen[run] = i
    return ids


# ---------------------------------------------------------------------------------- factors
def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _column(values: list[Any]) -> np.ndarray:
    """Per-run values of one factor as an array: int when every run has an integer, float with
    NaN when numbers are missing in some runs, else strings ('' where missing)."""
    present = [v for v in values if v is not _MISSING and v is not None]
    if present and all(_is_number(v) for v in present):
        if len(present) == len(values) and all(isinstance(v, int | np.integer) for v in present):
            return np.array(values, dtype=np.int64)
        return np.array(
            [float(v) if v is not _MISSING and v is not None else np.nan for v in values]
        )
    return np.array(
        [
            ""
            if v is _MISSING or v is None
            else json.dumps(v, sort_keys=True)
            if isinstance(v, dict | list)
            else str(v)
            for v in values
        ],
        dtype=str,
    )


def _json_attr(ds: xr.Dataset, key: str, name: str) -> dict[str, Any]:
    text = ds.attrs.get(key)
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError as error:
        raise ValueError(f"combine_runs: run {name}: attr {key!r} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"combine_runs: run {name}: attr {key!r} is not a JSON object")
    return value


def _config_value(config: dict[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _factors(
    datasets: list[xr.Dataset], ids: list[str], fields: Sequence[str]
) -> dict[str, np.ndarray]:
    """rule, seed, rule options, tags and config ``fields`` of every run, as coordinates."""
    out: dict[str, np.ndarray] = {
        "rule": np.array([str(ds.attrs["rule"]) for ds in datasets], dtype=str),
        "seed": np.array([int(ds.attrs["seed"]) for ds in datasets], dtype=np.int64),
    }
    taken = {RUN, *out, *(str(d) for ds in datasets for d in ds.dims)}
    for what, key in (("rule option", "rule_options"), ("tag", "tags")):
        per_run = [_json_attr(ds, key, run) for ds, run in zip(datasets, ids, strict=True)]
        names = list(dict.fromkeys(name for values in per_run for name in values))
        for name in sorted(names) if key == "rule_options" else names:
            if name in taken:
                where = next(r for r, values in zip(ids, per_run, strict=True) if name in values)
                raise ValueError(
                    f"combine_runs: run {where} has a {what} named {name!r}, which is already "
                    f"a coordinate or dim; rename the {what}"
                )
            out[name] = _column([values.get(name, _MISSING) for values in per_run])
            taken.add(name)
    configs = [_json_attr(ds, "config", run) for ds, run in zip(datasets, ids, strict=True)]
    for field in fields:
        if field in out:
            continue
        values = [_config_value(config, field) for config in configs]
        if all(v is _MISSING for v in values):
            raise ValueError(
                f"combine_runs: no run has the config field {field!r} (attr 'config'); name a "
                "dotted config key such as 'optim.lr'"
            )
        out[field] = _column(values)
    return out


def factors_of(ds: xr.Dataset | xr.DataArray) -> list[str]:
    """The factor coordinates of a run stack: every 1-D coordinate on ``run`` but ``run``."""
    return [str(name) for name, coord in ds.coords.items() if coord.dims == (RUN,) and name != RUN]


def is_stacked(ds: xr.Dataset | xr.DataArray) -> bool:
    """True for a run stack (:func:`combine_runs`): a ``run`` dim with a ``rule`` factor."""
    return RUN in ds.dims and "rule" in ds.coords and ds["rule"].dims == (RUN,)


# ---------------------------------------------------------------------------------- stacking
def _combined_attrs(datasets: list[xr.Dataset], names: list[str]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for ds in datasets for k in ds.attrs))
    for key in keys:
        values = [ds.attrs.get(key) for ds in datasets]
        same = all(json.dumps(v, default=str) == json.dumps(values[0], default=str) for v in values)
        if same:
            attrs[key] = values[0]
        elif key in ("config", "rule_options", "tags"):
            attrs[key] = json.dumps([json.loads(v) if v else None for v in values])
        else:
            attrs[key] = json.dumps(values, default=str)
    for key in REQUIRED_ATTRS:
        attrs.setdefault(key, "")
    attrs["runs"] = json.dumps([str(p) for p in names])
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


def _lead(block: np.ndarray, lead: int, drop: int = 0) -> np.ndarray:
    """``block`` without its ``drop`` leading dims of size 1, with ``lead`` new ones instead."""
    return block.reshape((1,) * lead + block.shape[drop:])


class _Placement:
    """Where each run goes on a grid: ``axes`` (dim → values), ``shape``, ``flat`` (each run's
    flat grid index), ``run_at`` (each grid point's run, −1 if none), ``complete``."""

    def __init__(self, axes: dict[str, list[Any]], positions: np.ndarray) -> None:
        self.axes = axes
        self.shape = tuple(len(axis) for axis in axes.values())
        self.positions = positions  # (runs, dims)
        self.flat = np.ravel_multi_index(tuple(positions.T), self.shape)
        self.complete = len(self.flat) == math.prod(self.shape)
        self.run_at = np.full(math.prod(self.shape), -1)
        self.run_at[self.flat] = np.arange(len(self.flat))

    @classmethod
    def of(cls, values: dict[str, list[Any]]) -> _Placement:
        """Axes of sorted distinct values (NaN last) of each factor; runs placed on them."""
        axes = {dim: _axis(v) for dim, v in values.items()}
        columns = [[_index(axes[dim], v) for v in column] for dim, column in values.items()]
        positions = np.array(columns, dtype=np.int64).T.reshape(-1, len(values))
        return cls(axes, positions)


def _axis(values: list[Any]) -> list[Any]:
    """Distinct values, sorted, NaN (an option the rule does not have) last."""
    distinct = sorted({v for v in values if not _is_nan(v)})
    return distinct + ([math.nan] if any(_is_nan(v) for v in values) else [])


def _index(axis: list[Any], value: Any) -> int:
    return next(i for i, a in enumerate(axis) if a == value or (_is_nan(a) and _is_nan(value)))


def _source(data: Any, zeros: tuple[int, ...]) -> tuple[Any, Any]:
    """(what a stack task takes: ``data``'s one block, the dask array it depends on or None).

    A run's variable that is one read task (a compacted segment: see
    :func:`alignment.recording.store.read_zarr`) is inlined into the stack's task, so the graph
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


def _fill(dtype: np.dtype) -> Any:
    return math.nan if dtype.kind in "fc" else dtype.type()


def _lazy_stack(parts: list[xr.Variable | None], ids: list[str]) -> xr.Variable:
    """One variable of every run (None where a run lacks it; runs aligned) as a dask-backed
    Variable with a leading ``run`` dim: each run's block is its one chunk, referred to and not
    copied, or a lazy fill block (NaN; integers become float) where the run lacks it."""
    import dask.array
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    first = next(p for p in parts if p is not None)
    dims, shape = first.dims, first.shape
    dtype = np.result_type(*(p.dtype for p in parts if p is not None))
    if any(p is None for p in parts) and dtype.kind in "iub":
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
    filler = dask.array.full(shape, _fill(dtype), dtype=dtype, chunks=shape or ())
    zeros = (0,) * len(shape)
    names = [a.name if a is not None else None for a in arrays]
    name = "runs-" + tokenize(names, str(dtype))
    sources = [None if a is None else _source(a, zeros) for a in arrays]
    layer: dict[tuple, tuple] = {}
    for i, source in enumerate(sources):
        block = (filler.name, *zeros) if source is None else source[0]
        layer[(name, i, *zeros)] = (_lead, block, 1)
    used = [s[1] for s in sources if s is not None and s[1] is not None]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[*used, filler])
    chunks = ((1,) * len(parts), *((n,) for n in shape))
    data = dask.array.Array(graph, name, chunks, meta=np.empty((0,) * (1 + len(shape)), dtype))
    return xr.Variable((RUN, *dims), data, first.attrs)


def combine_runs(
    datasets: Sequence[xr.Dataset],
    names: Sequence[str] | None = None,
    *,
    factors: Sequence[str] = (),
) -> xr.Dataset:
    """Single-run Datasets (as :func:`alignment.recording.open_run` returns them) stacked along
    a new leading dim ``run`` with their factors as coordinates (see the module docstring).

    ``names``: the runs' paths (default ``run0``, ``run1``, …): attr ``runs``, and the run IDs
    (:func:`run_ids`). ``factors``: dotted config keys (``"optim.lr"``) to add as coordinates.
    Runs are aligned by outer join: steps, layers and samples that some runs lack are NaN there.
    Lazy (dask-backed) runs give a lazy stack, one chunk per run; numpy-backed runs a numpy one.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("combine_runs: no runs given")
    names = [str(n) for n in (names or [f"run{i}" for i in range(len(datasets))])]
    for name, ds in zip(names, datasets, strict=True):
        if "run_dims" in ds.attrs or RUN in ds.dims:
            raise ValueError(f"combine_runs: {name} already combines runs; combine single runs")
    ids = run_ids(names)
    coords = _factors(datasets, ids, list(factors))
    attrs = _combined_attrs(datasets, names)
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
    # dask-backed variables are stacked lazily, run by run; the rest through xr.concat
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
        dim=RUN,
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
        combine_attrs="override",
    )
    if lazy:
        stacked = {name: _lazy_stack(parts[name], ids) for name in lazy}
        variables = {n: stacked[n] if n in stacked else combined[n].variable for n in order}
        combined = xr.Dataset(variables, coords=combined.coords)
    combined = combined.assign_coords({RUN: ids, **{k: (RUN, v) for k, v in coords.items()}})
    added = {d for ds in datasets for d in ds.dims if d not in ds.indexes}
    combined = combined.drop_vars([d for d in added if d in combined.coords])
    if epochs is not None:
        combined = combined.assign_coords(epoch=epochs.reindex(step=combined["step"]))
    attrs["run_dims"] = json.dumps([RUN])
    attrs["run_factors"] = json.dumps(list(coords))
    combined.attrs = attrs
    from alignment.recording.open import _validated

    return _validated(combined)


# ---------------------------------------------------------------------------------- the grid
def _key(value: Any) -> Any:
    return "\0nan" if _is_nan(value) else value


def _determined(target: list[Any], by: list[list[Any]]) -> bool:
    """True if ``target`` (one value per run) is a function of the columns ``by``."""
    seen: dict[tuple, Any] = {}
    for i, value in enumerate(target):
        key = tuple(_key(column[i]) for column in by)
        if seen.setdefault(key, _key(value)) != _key(value):
            return False
    return True


def default_factors(ds: xr.Dataset | xr.DataArray, keep: Sequence[str] = ()) -> list[str]:
    """``rule``, ``seed``, the factors in ``keep``, then every other factor (in order) that the
    ones so far do not determine: the fewest dims that still tell the runs apart."""
    names = factors_of(ds)
    values = {name: ds[name].values.tolist() for name in names}
    chosen = ["rule", "seed", *(k for k in keep if k in values and k not in ("rule", "seed"))]
    for name in names:
        if name not in chosen and not _determined(values[name], [values[c] for c in chosen]):
            chosen.append(name)
    return chosen


def _clash(ds: xr.Dataset | xr.DataArray, factors: list[str], placement: _Placement) -> str:
    """A message naming runs that the ``factors`` do not tell apart (empty if none)."""
    ids = [str(r) for r in ds[RUN].values]
    first: dict[int, int] = {}
    for run, point in enumerate(placement.flat.tolist()):
        other = first.setdefault(point, run)
        if other == run:
            continue
        same = ", ".join(f"{f}={ds[f].values.tolist()[run]!r}" for f in factors)
        apart = [
            f
            for f in factors_of(ds)
            if f not in factors and _key(ds[f].values[run]) != _key(ds[f].values[other])
        ]
        hint = (
            f"add a factor that tells them apart ({', '.join(apart)})"
            if apart
            else "tag them (Recorder(..., tags={...})) or select one"
        )
        return f"runs {ids[other]} and {ids[run]} share {same}; {hint}"
    return ""


def _scatter(var: xr.Variable, placement: _Placement) -> xr.Variable:
    """A numpy-backed variable with a leading ``run`` dim on the grid (fill where no run)."""
    var = var.transpose(RUN, ...)
    values = np.asarray(var.values)
    if not placement.complete and values.dtype.kind in "iub":
        values = values.astype(np.float64)
    size = (math.prod(placement.shape), *values.shape[1:])
    out = np.full(size, _fill(values.dtype), values.dtype)
    out[placement.flat] = values
    shape = placement.shape + values.shape[1:]
    return xr.Variable((*placement.axes, *var.dims[1:]), out.reshape(shape), var.attrs)


def _lazy_regroup(var: xr.Variable, placement: _Placement) -> xr.Variable:
    """A dask-backed variable with a leading ``run`` dim on the grid: each grid point's block
    refers to its run's chunk; a lazy fill block where no run is."""
    import dask.array
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    var = var.transpose(RUN, ...)
    data = var.data
    rest = data.shape[1:]
    dtype = data.dtype
    if not placement.complete and dtype.kind in "iub":
        dtype = np.dtype(np.float64)
        data = data.astype(dtype)
    wanted = ((1,) * data.shape[0], *((n,) for n in rest))
    if data.chunks != wanted:
        data = data.rechunk(wanted)
    filler = dask.array.full(rest, _fill(dtype), dtype=dtype, chunks=rest or ())
    zeros = (0,) * len(rest)
    lead = len(placement.shape)
    name = "grid-" + tokenize(data.name, placement.shape, placement.run_at.tolist())
    layer: dict[tuple, tuple] = {}
    for point, run in enumerate(placement.run_at.tolist()):
        where = tuple(int(i) for i in np.unravel_index(point, placement.shape))
        if run >= 0:
            layer[(name, *where, *zeros)] = (_lead, (data.name, run, *zeros), lead, 1)
        else:
            layer[(name, *where, *zeros)] = (_lead, (filler.name, *zeros), lead)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[data, filler])
    chunks = tuple((1,) * n for n in placement.shape) + tuple((n,) for n in rest)
    meta = np.empty((0,) * (lead + len(rest)), dtype=dtype)
    out = dask.array.Array(graph, name, chunks, meta=meta)
    return xr.Variable((*placement.axes, *var.dims[1:]), out, var.attrs)


def _reduced(coord: xr.DataArray, factors: list[str], placement: _Placement) -> xr.Variable:
    """A factor that is not a grid dim, on the fewest grid dims that determine it."""
    values = coord.values.tolist()
    columns = [placement.positions[:, i].tolist() for i in range(len(factors))]
    for size in range(len(factors) + 1):
        for dims in itertools.combinations(range(len(factors)), size):
            if _determined(values, [columns[d] for d in dims]):
                shape = tuple(placement.shape[d] for d in dims)
                array = np.asarray(coord.values)
                held = {tuple(p) for p in placement.positions[:, list(dims)].tolist()}
                if array.dtype.kind in "iub" and len(held) < math.prod(shape):
                    array = array.astype(np.float64)
                out = np.full(shape, _fill(array.dtype), array.dtype)
                for run, value in enumerate(array):
                    out[tuple(placement.positions[run, list(dims)])] = value
                return xr.Variable(tuple(factors[d] for d in dims), out, coord.attrs)
    raise AssertionError("unreachable: the full set of grid dims determines every factor")


def grid(ds: xr.Dataset, factors: Sequence[str] | None = None) -> xr.Dataset:
    """A run stack (:func:`combine_runs`, :func:`alignment.open_runs`) regrouped into a dense
    grid with one leading dim per factor in ``factors`` (default :func:`default_factors`:
    ``rule``, ``seed`` and what else tells the runs apart), NaN where no run is.

    The other factors become coordinates on the fewest grid dims that determine them; the
    ``run`` coordinate (on every grid dim) names the run at each point, '' where none. Raises
    ValueError when the factors do not identify the runs uniquely, naming two runs that clash.
    Lazy stacks stay lazy: each grid point refers to its run's chunk.
    """
    if not is_stacked(ds):
        raise ValueError(
            "grid: the Dataset has no 'run' dim with factor coordinates; pass what open_runs or "
            "combine_runs returns"
        )
    available = factors_of(ds)
    factors = default_factors(ds) if factors is None else list(factors)
    unknown = [f for f in factors if f not in available]
    if unknown or len(set(factors)) != len(factors) or not factors:
        raise ValueError(
            f"grid: factors {factors} must be distinct names among the runs' factors: "
            f"{', '.join(available)}"
        )
    placement = _Placement.of({f: ds[f].values.tolist() for f in factors})
    clash = _clash(ds, factors, placement)
    if clash:
        raise ValueError(f"grid: the factors {factors} do not identify the runs: {clash}")
    data_vars = {}
    for name, da in ds.data_vars.items():
        if RUN not in da.dims:
            data_vars[name] = da.variable
        elif da.chunks is not None:
            data_vars[name] = _lazy_regroup(da.variable, placement)
        else:
            data_vars[name] = _scatter(da.variable, placement)
    coords: dict[str, Any] = {}
    for name, coord in ds.coords.items():
        if name == RUN or RUN not in coord.dims:
            coords[name] = coord.variable
        elif name in factors:
            continue
        elif coord.dims == (RUN,) and name in available:
            coords[name] = _reduced(coord, factors, placement)
        else:
            coords[name] = _scatter(coord.variable, placement)
    coords[RUN] = _scatter(ds[RUN].variable.astype(str), placement)
    coords |= {dim: np.array(axis) for dim, axis in placement.axes.items()}
    out = xr.Dataset(data_vars, coords)
    out = out[list(ds.data_vars)]
    out.attrs = {
        **ds.attrs,
        "run_dims": json.dumps(factors),
        "run_ids": json.dumps([str(r) for r in ds[RUN].values]),
    }
    return out


# ---------------------------------------------------------------------------------- tidy
def tidy(ds: xr.Dataset, variables: str | Sequence[str], *, dropna: bool = True) -> pd.DataFrame:
    """A long table of ``variables`` for pandas and seaborn: one row per run and per point of the
    variables' own dims (step, layer, sample, …), columns for the run ID, its factors (rule,
    seed, options, tags, config fields), the dims and coordinates (``epoch``, …), then one column
    per variable (variables with fewer dims repeat along the others). ``dropna``: drop rows where
    every variable is NaN (steps a variable was not recorded at). Takes a run stack, a grid or a
    single run; reads only the variables named.

    >>> frame = tidy(open_runs("runs/*"), ["feedback_alignment"])            # doctest: +SKIP
    >>> seaborn.lineplot(frame, x="step", y="feedback_alignment", hue="rule")  # doctest: +SKIP
    """
    names = [variables] if isinstance(variables, str) else list(variables)
    missing = [n for n in names if n not in ds.data_vars]
    if missing or not names:
        raise ValueError(
            f"tidy: no variable {', '.join(missing) or '(none named)'}; the Dataset has "
            f"{', '.join(map(str, ds.data_vars))}"
        )
    if RUN not in ds.dims and "run_dims" not in ds.attrs:
        ds = combine_runs([ds], [str(ds.attrs.get("rule", "run"))])
    sub = ds[names].compute()
    factors = factors_of(sub) if is_stacked(sub) else []
    frame = sub.to_dataframe()
    if dropna:
        frame = frame.dropna(how="all", subset=names)
    frame = frame.reset_index()
    if RUN in frame.columns and not is_stacked(sub):  # a grid: points without a run are gone
        frame = frame[frame[RUN] != ""]
    first = [c for c in (RUN, *factors) if c in frame.columns]
    last = [c for c in frame.columns if c in names]
    middle = [c for c in frame.columns if c not in first and c not in last]
    return frame[[*first, *middle, *last]].reset_index(drop=True)
