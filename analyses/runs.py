"""Across runs: combine records, regroup them, split them again, reduce over seeds, tabulate
accuracy.

:func:`alignment.open_runs` and :func:`combine` stack runs along a ``run`` dim whose coordinates
are the runs' factors (rule, seed, rule options, user tags, chosen config fields: see
:mod:`alignment.recording.combine`). The analyses work on a dense grid: :func:`as_combined` turns
a stack into one with leading dims ``rule``, ``seed`` and whatever other factor still tells runs
apart (a sweep over ``k`` adds ``k``; options that only tell rules apart, PFA's ``k=10`` vs
PFA-o's ``k=1``, become coordinates on ``rule``), listed in the JSON attr ``run_dims``. Every
analysis accepts either form and calls it at its entry. Grid points that no run has are NaN.
:func:`collapse_options` removes option dims that remain (one variant per rule).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import xarray as xr

from alignment.analyses._common import last_finite, option_dims, run_dims, select_variables
from alignment.analyses.rules import order_rules, rule_label, sorted_rules
from alignment.recording.combine import combine_runs, default_factors, grid, is_stacked

T = TypeVar("T", xr.Dataset, xr.DataArray)

STATS = ("mean", "std", "sem", "n")
PER_RUN_ATTRS = ("config", "rule", "rule_options", "seed", "steps_per_epoch", "tags")


# ------------------------------------------------------------------------------ combining
def combine(
    datasets: Sequence[xr.Dataset],
    *,
    names: Sequence[str] | None = None,
    factors: Sequence[str] = (),
) -> xr.Dataset:
    """Single-run Datasets (as :func:`alignment.open_run` returns them) stacked along ``run``
    with their factors as coordinates: what :func:`alignment.open_runs` does for paths, for
    Datasets already in memory.

    ``names`` (default ``run0``, ``run1``, …) stand in for the run paths in attr ``runs``, the
    run IDs and error messages; ``factors``: config fields to add (dotted keys).
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("combine: no datasets given")
    for i, ds in enumerate(datasets):
        if run_dims(ds):
            raise ValueError(
                f"combine: dataset {i} already combines runs (run_dims {run_dims(ds)}); "
                "combine single runs, e.g. the results of split_runs()"
            )
    return combine_runs(datasets, list(names) if names is not None else None, factors=factors)


def as_combined(ds: xr.Dataset, *, keep: Sequence[str] = ()) -> xr.Dataset:
    """The dense grid the analyses work on: a run stack regrouped with
    :func:`alignment.recording.grid` over ``rule``, ``seed``, the factors in ``keep`` (e.g.
    ``density``) and every other factor that still tells runs apart; a single run as such a grid
    of one run; a grid unchanged."""
    if is_stacked(ds):
        return grid(ds, default_factors(ds, keep))
    if run_dims(ds):
        return ds
    return grid(combine_runs([ds], [str(ds.attrs.get("rule", "run"))]), ["rule", "seed"])


def _as_grid(obj: T) -> T:
    """:func:`as_combined` for a Dataset or a DataArray taken from a run stack."""
    if not is_stacked(obj):
        return obj
    if isinstance(obj, xr.Dataset):
        return as_combined(obj)
    name = obj.name if obj.name is not None else "__values"
    out = grid(obj.to_dataset(name=name), default_factors(obj))[name]
    return out.rename(obj.name)


def _per_run(value: Any, n: int, i: int, *, json_value: bool) -> Any:
    """Run ``i``'s value of a combined attr (a JSON list of n values where the runs differ)."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value
    if isinstance(parsed, list) and len(parsed) == n:
        item = parsed[i]
        return json.dumps(item, sort_keys=True) if json_value else item
    return value


def _run_attrs(attrs: dict[str, Any], n: int, i: int) -> dict[str, Any]:
    out = {
        k: v for k, v in attrs.items() if k not in ("runs", "run_dims", "run_ids", "run_factors")
    }
    for key in PER_RUN_ATTRS:
        if key in out:
            json_value = key in ("config", "rule_options", "tags")
            out[key] = _per_run(out[key], n, i, json_value=json_value)
    return out


def split_runs(ds: xr.Dataset) -> list[tuple[dict[str, int], xr.Dataset]]:
    """The runs of a combined Dataset (a run stack or a grid), each as (its positions on the
    run dims, single-run Dataset with its own ``config``, ``rule``, ``rule_options``, ``seed``
    and ``tags`` attrs), in run order. A single run gives ``[({}, ds)]``."""
    if is_stacked(ds):
        n = ds.sizes["run"]
        runs = []
        for i in range(n):
            run = ds.isel(run=i)
            run = run.drop_vars([c for c, v in ds.coords.items() if v.dims == ("run",)])
            run.attrs = _run_attrs(ds.attrs, n, i)
            runs.append(({"run": i}, run))
        return runs
    if not run_dims(ds):
        return [({}, ds)]
    ids = json.loads(ds.attrs["run_ids"])
    at = ds["run"]
    runs = []
    for i, run_id in enumerate(ids):
        found = np.argwhere(np.asarray(at.values) == run_id)
        if not len(found):  # selected away
            continue
        where = {str(d): int(p) for d, p in zip(at.dims, found[0], strict=True)}
        run = ds.isel(where)
        run.attrs = _run_attrs(ds.attrs, len(ids), i)
        runs.append((where, run))
    return runs


def _presence(ds: xr.Dataset) -> xr.DataArray:
    """True at the run-dim grid points that hold a run."""
    lead = set(run_dims(ds))
    name = "loss" if "loss" in ds else next(n for n in ds.data_vars if "step" in ds[n].dims)
    da = ds[name]
    return da.notnull().any([d for d in da.dims if d not in lead])


def collapse_options(ds: xr.Dataset, *, keep: Sequence[str] = ()) -> xr.Dataset:
    """Remove the option dims (all run dims but ``rule``, ``seed`` and ``keep``) by taking, for
    each rule, the one option combination its runs have; the chosen values become coordinates on
    ``rule``. Rules come out in paper order. Raises ValueError when a rule's runs differ in an
    option that is not kept (e.g. a sweep over ``k``: pass ``keep=("k",)``)."""
    ds = as_combined(ds, keep=keep)
    dims = [d for d in option_dims(ds) if d not in keep]
    if not dims:
        return order_rules(ds)
    present = _presence(ds).any([d for d in run_dims(ds) if d not in ("rule", *dims)]).compute()
    stacked = present.stack(variant=dims)
    parts = []
    for rule in sorted_rules(ds["rule"].values):
        found = np.flatnonzero(stacked.sel(rule=rule).values)
        if len(found) > 1:
            combos = [stacked["variant"].values[i] for i in found]
            raise ValueError(
                f"collapse_options: rule {rule!r} has runs with different {tuple(dims)}: {combos}; "
                f"keep the dim that varies (keep=({dims[0]!r},)) or select runs first"
            )
        index = np.unravel_index(int(found[0]) if len(found) else 0, [ds.sizes[d] for d in dims])
        part = ds.sel(rule=[rule]).isel(dict(zip(dims, map(int, index), strict=True)))
        parts.append(part.assign_coords({d: ("rule", [part[d].item()]) for d in dims}))
    out = xr.concat(parts, dim="rule", data_vars="all", coords="different", compat="equals")
    out.attrs = {**ds.attrs, "run_dims": json.dumps([d for d in run_dims(ds) if d not in dims])}
    return out


# ------------------------------------------------------------------------------ over seeds
def _stats(da: xr.DataArray, dim: str, ddof: int) -> xr.DataArray:
    # Sums and divisions by masked counts rather than nanmean/nanstd: the same numbers, but no
    # division by zero where no seed has a value, which dask (lazy runs) would warn about.
    values = da.astype(float)
    n = values.notnull().sum(dim)
    mean = values.sum(dim, skipna=True) / n.where(n > 0)
    squares = ((values - mean) ** 2).sum(dim, skipna=True)
    std = np.sqrt(squares / (n - ddof).where(n > ddof))
    sem = std / np.sqrt(n.where(n > 0))
    out = xr.concat([mean, std, sem, n.astype(float)], dim="stat").assign_coords(
        stat=np.array(STATS)
    )
    out.attrs = dict(da.attrs)
    return out


def seed_statistics(obj: T, *, dim: str = "seed", ddof: int = 1) -> T:
    """Mean, standard deviation (``ddof``), standard error and count of finite values over
    ``dim``, on a new leading dim ``stat`` = ('mean', 'std', 'sem', 'n'). Attrs are kept;
    variables without ``dim`` are left as they are. A single run (no ``dim``) has std NaN. A run
    stack is regrouped first (:func:`as_combined`)."""
    obj = _as_grid(obj)
    if isinstance(obj, xr.DataArray):
        da = obj if dim in obj.dims else obj.expand_dims({dim: 1})
        return _stats(da, dim, ddof).transpose("stat", ...)
    out = obj.copy()
    for name, da in obj.data_vars.items():
        if dim in da.dims and da.dtype.kind in "biuf":
            out[name] = _stats(da, dim, ddof).transpose("stat", ...)
    if dim in out.coords and not any(dim in v.dims for v in out.data_vars.values()):
        out = out.drop_vars(dim)
    out.attrs = dict(obj.attrs)
    if run_dims(obj):
        out.attrs["run_dims"] = json.dumps([d for d in run_dims(obj) if d != dim])
    return out


# ------------------------------------------------------------------------------ accuracy table
def accuracy_table(
    ds: xr.Dataset,
    *,
    variable: str = "test_accuracy",
    keep: Sequence[str] = (),
    percent: bool = True,
    ddof: int = 1,
) -> xr.Dataset:
    """Final (last evaluation) and best accuracy of every run, mean ± std over seeds.

    Dims: ``rule`` (paper order) and the option dims in ``keep`` (e.g. ``density``); variables
    ``final_mean``, ``final_std``, ``best_mean``, ``best_std`` (in % with ``percent``) and
    ``seeds`` (number of runs). Rows without runs have ``seeds`` = 0.
    """
    ds = collapse_options(select_variables(ds, [variable]), keep=keep)
    acc = ds[variable] * (100.0 if percent else 1.0)
    units = "%" if percent else ds[variable].attrs.get("units", "1")
    final = seed_statistics(last_finite(acc, "step"), ddof=ddof)
    best = seed_statistics(acc.max("step", skipna=True), ddof=ddof)
    name = ds[variable].attrs.get("long_name", variable)

    def var(da: xr.DataArray, which: str, stat: str) -> xr.DataArray:
        out = da.sel(stat=stat, drop=True)
        word = "standard deviation over seeds of the" if stat == "std" else "mean over seeds of the"
        out.attrs = {
            "long_name": f"{which} {name}" + (" (std)" if stat == "std" else ""),
            "units": units,
            "description": f"{word} {which} {name} of each run.",
        }
        return out

    seeds = final.sel(stat="n", drop=True).fillna(0).astype(int)
    seeds.attrs = {"long_name": "seeds", "units": "1", "description": "Runs with an evaluation."}
    table = xr.Dataset(
        {
            "final_mean": var(final, "final", "mean"),
            "final_std": var(final, "final", "std"),
            "best_mean": var(best, "best", "mean"),
            "best_std": var(best, "best", "std"),
            "seeds": seeds,
        }
    )
    table.attrs = {"variable": variable, "units": units}
    return table


def table_frame(table: xr.Dataset | pd.DataFrame) -> pd.DataFrame:
    """The accuracy table as a DataFrame, one row per rule (and kept option), rows without runs
    dropped, rules in paper order."""
    if isinstance(table, pd.DataFrame):
        return table
    frame = table.to_dataframe()
    extra = [c for c in frame.columns if c not in table.data_vars]
    frame = frame.drop(columns=extra)
    frame = frame[frame["seeds"] > 0]
    index = [str(n) for n in frame.index.names]
    frame = frame.reset_index()
    order = {r: i for i, r in enumerate(sorted_rules(frame["rule"]))}
    frame = frame.sort_values(
        by=["rule", *index[1:]], key=lambda c: c.map(order) if c.name == "rule" else c
    )
    return frame.set_index(index)


def _pm(mean: float, std: float, digits: int, latex: bool) -> str:
    if not np.isfinite(mean):
        return "–"
    sep = r" \pm " if latex else " ± "
    text = f"{mean:.{digits}f}" + (f"{sep}{std:.{digits}f}" if np.isfinite(std) else "")
    return f"${text}$" if latex else text


def _display_rows(
    table: xr.Dataset | pd.DataFrame, digits: int, latex: bool
) -> tuple[list[str], list[list[str]]]:
    frame = table_frame(table)
    units = table.attrs.get("units", "%") if isinstance(table, xr.Dataset) else "%"
    names = [str(n) for n in frame.index.names]
    header = [*names, f"final ({units})", f"best ({units})", "seeds"]
    rows = []
    for index, row in frame.iterrows():
        keys = index if isinstance(index, tuple) else (index,)
        cells = [rule_label(str(keys[0])), *(_format_key(k) for k in keys[1:])]
        cells += [
            _pm(row["final_mean"], row["final_std"], digits, latex),
            _pm(row["best_mean"], row["best_std"], digits, latex),
            str(int(row["seeds"])),
        ]
        rows.append(cells)
    return header, rows


def _format_key(value: Hashable) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:g}"
    return str(value)


def to_markdown(table: xr.Dataset | pd.DataFrame, *, digits: int = 2) -> str:
    """The accuracy table as a GitHub-flavoured markdown table ('mean ± std')."""
    header, rows = _display_rows(table, digits, latex=False)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def to_csv(table: xr.Dataset | pd.DataFrame) -> str:
    """The accuracy table as CSV: rule name, kept options, the numbers at full precision."""
    return table_frame(table).to_csv(float_format="%.6g")


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text


def to_latex(
    table: xr.Dataset | pd.DataFrame,
    *,
    digits: int = 2,
    caption: str | None = None,
    label: str | None = None,
) -> str:
    """The accuracy table as a LaTeX ``table`` with a booktabs ``tabular`` ('$m \\pm s$')."""
    header, rows = _display_rows(table, digits, latex=True)
    body = [" & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    body += [
        " & ".join(c if c.startswith("$") else _latex_escape(c) for c in cells) + r" \\"
        for cells in rows
    ]
    lines = [r"\begin{table}", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{'l' * (len(header) - 3)}rrr}}", r"\toprule", *body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
