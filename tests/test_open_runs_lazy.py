"""Lazy ``open_runs``: the same Dataset as an eager load, dask-backed with one chunk per run,
nothing read when opening, reductions over seeds and every figure the same as on eager data."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array
import numpy as np
import pytest
import xarray as xr
import zarr.storage

import alignment.recording
from alignment import analyses as an
from alignment import open_run, open_runs
from alignment.cli_figures import build_from_runs
from alignment.figures.build import RUN_FIGURES
from alignment.recording import SchemaError, combine_runs
from alignment.recording.store import SegmentStore
from tests.synthetic import RULE_OPTIONS, synthetic_run, write_run

# (rule, seed, options, how the record is left on disk)
RUNS = [
    ("bp", 0, None, "compact"),
    ("bp", 1, None, "compact"),
    ("fa", 0, None, "compact"),
    ("fa", 1, None, "segments"),  # a run still going: three segments, not compacted
    ("pfa", 0, None, "compact"),
    ("pfa", 1, None, "truncated"),  # resumed: its last records dropped by a truncation marker
    ("pfa_o", 0, None, "compact"),  # no pfa_o seed 1: a grid point without a run
    ("pfa", 0, {**RULE_OPTIONS["pfa"], "density": 0.3}, "compact"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("lazy_runs")
    found = []
    for rule, seed, options, state in RUNS:
        ds = synthetic_run(rule, seed, options=options, raw=True)
        name = f"{rule}_seed{seed}" + ("_sparse" if options else "")
        path = write_run(ds, root / name, flushes=3, compact=state == "compact")
        if state == "truncated":
            SegmentStore(path).truncate("main", 15)
        found.append(path)
    return found


@pytest.fixture(scope="module")
def eager(paths: list[Path]) -> xr.Dataset:
    return open_runs(paths, raw=True, lazy=False)


def lazy_vars(ds: xr.Dataset) -> list[str]:
    return [str(n) for n, v in ds.data_vars.items() if isinstance(v.data, dask.array.Array)]


def test_lazy_open_runs_equals_the_eager_load(paths: list[Path], eager: xr.Dataset) -> None:
    lazy = open_runs(paths, raw=True)
    assert lazy_vars(lazy) == list(lazy.data_vars) and not lazy_vars(eager)
    assert all(lazy[name].chunks is None for name in lazy.coords)  # coordinates in memory
    assert json.loads(lazy.attrs["run_dims"]) == ["run"]
    assert json.loads(lazy.attrs["run_factors"]) == ["rule", "seed", "b_init", "density", "k"]
    for name, var in lazy.data_vars.items():  # one chunk per run along the run dim
        assert set(var.chunks[0]) == {1} and all(len(c) == 1 for c in var.chunks[1:]), name
    xr.testing.assert_identical(lazy.compute(), eager)
    assert list(lazy.dims) == list(eager.dims)  # same order of dims, variables, coordinates
    assert list(lazy.data_vars) == list(eager.data_vars) and list(lazy.coords) == list(eager.coords)
    assert eager["loss"].sel(run="pfa_seed1").notnull().sum() == 15  # the truncation held
    gridded = alignment.recording.grid(lazy)  # rule × seed × density (PFA has two)
    assert json.loads(gridded.attrs["run_dims"]) == ["rule", "seed", "density"]
    for name, var in gridded.data_vars.items():  # still one chunk per grid point
        assert all(set(sizes) == {1} for sizes in var.chunks[:3]), name
    xr.testing.assert_identical(gridded.compute(), alignment.recording.grid(eager))
    assert np.isnan(gridded["loss"].sel(rule="pfa_o", seed=1, density=1.0)).all()


def test_open_run_lazy_equals_eager(paths: list[Path]) -> None:
    for path in (paths[3], paths[5]):  # segments; truncated
        lazy = open_run(path, raw=True, lazy=True)
        assert lazy_vars(lazy) == list(lazy.data_vars)
        xr.testing.assert_identical(lazy.compute(), open_run(path, raw=True))
    raw = alignment.recording.open_raw(paths[0], lazy=True)
    assert lazy_vars(raw) == list(raw.data_vars)
    xr.testing.assert_identical(raw.compute(), alignment.recording.open_raw(paths[0]))


def test_opening_reads_no_data_variable(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of a zarr chunk goes through LocalStore.get: opening reads chunks of
    coordinates only; computing a result reads the chunks of the variables it needs."""
    read: list[str] = []
    get = zarr.storage.LocalStore.get

    async def counting_get(self, key, *args, **kwargs):  # type: ignore[no-untyped-def]
        parts = key.split("/")
        if "c" in parts[1:]:  # <array>/c/<chunk index>: data, not metadata
            read.append(parts[0])
        return await get(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    lazy = open_runs(paths, raw=True)
    assert read and set(read) <= {"step", "epoch", "layer", "raw_step", "raw_epoch"}
    assert not set(read) & set(lazy.data_vars)
    read.clear()
    float(lazy["test_accuracy"].max())
    assert set(read) == {"test_accuracy"} and len(read) >= len(paths)


def test_reductions_over_seeds_match_the_eager_ones(paths: list[Path], eager: xr.Dataset) -> None:
    lazy = open_runs(paths, raw=True)
    stats = an.seed_statistics(lazy["feedback_alignment"])
    assert isinstance(stats.data, dask.array.Array)
    xr.testing.assert_allclose(stats.compute(), an.seed_statistics(eager["feedback_alignment"]))
    mean = an.as_combined(lazy)["loss"].mean("seed")
    xr.testing.assert_allclose(mean.compute(), an.as_combined(eager)["loss"].mean("seed"))
    table = an.accuracy_table(lazy, keep=("density",))
    xr.testing.assert_allclose(table.compute(), an.accuracy_table(eager, keep=("density",)))


@pytest.mark.parametrize("how", ["first", "last", "mean"])
def test_per_epoch_on_dask_equals_groupby(eager: xr.Dataset, how: str) -> None:
    ds = eager[["feedback_alignment", "test_accuracy", "grad_norm", "probe_label"]].copy(deep=True)
    ds["grad_norm"].loc[{"run": "pfa_seed0", "step": slice(0, 6)}] = np.nan  # epoch 0: no value
    expected = an.per_epoch(ds, how=how)  # type: ignore[arg-type]
    lazy = an.per_epoch(ds.chunk({"run": 1}), how=how)  # type: ignore[arg-type]
    assert lazy_vars(lazy) == list(lazy.data_vars)
    xr.testing.assert_allclose(lazy.compute(), expected)
    one = an.per_epoch(ds["grad_norm"].chunk({"run": 1}), how=how)  # type: ignore[arg-type]
    xr.testing.assert_allclose(one.compute(), expected["grad_norm"])


def test_every_figure_is_the_same_from_lazy_runs(paths: list[Path], eager: xr.Dataset) -> None:
    lazy = open_runs(paths)
    eager = eager.drop_dims("raw_step")
    built = 0
    for name, module in RUN_FIGURES.items():
        assert module.supports(lazy) == module.supports(eager), name
        if module.supports(lazy) is not None:
            continue
        data = module.figure_data(lazy)
        assert not any(v.chunks for v in data.variables.values()), name  # read and reduced
        xr.testing.assert_allclose(data, module.figure_data(eager))
        built += 1
    assert built >= 5


def test_alignment_figures_opens_runs_lazily(
    paths: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[bool] = []
    original = alignment.recording.open_runs

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        ds = original(*args, **kwargs)
        opened.append(lazy_vars(ds) == list(ds.data_vars))
        return ds

    monkeypatch.setattr(alignment.recording, "open_runs", spy)
    built = build_from_runs(paths, tmp_path, ("png",), only=("fig2_mnist", "fig_sparse"))
    assert opened == [True]
    assert set(built) == {"fig2_mnist", "fig_sparse"}
    assert all(p.stat().st_size > 0 for files in built.values() for p in files)


def test_lazy_runs_are_still_checked(paths: list[Path]) -> None:
    run = open_run(paths[0], lazy=True)
    run["loss"].attrs.pop("units")
    with pytest.raises(SchemaError, match="units"):
        combine_runs([run, open_run(paths[2], lazy=True)])
