"""The analyses: pure Dataset → Dataset functions, checked on synthetic runs with known values,
against the theory's closed forms (Fig. 3) and against a real recorded PFA run (theory
property 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from alignment import analyses as an
from alignment import convert, models, open_run, open_runs
from alignment.analyses.representations import layer_outputs, probe_inputs
from alignment.recording import validate
from alignment.theory import decay_factors, expected_angle, marchenko_pastur
from tests.synthetic import synthetic_run, synthetic_runs, tiny_runs


@pytest.fixture(scope="module")
def runs() -> xr.Dataset:
    return synthetic_runs(("bp", "fa", "pfa", "pfa_o"), (0, 1, 2))


# ------------------------------------------------------------------------------ across runs
def test_combine_and_split_round_trip() -> None:
    singles = [synthetic_run(rule, seed) for rule in ("bp", "pfa", "pfa_o") for seed in (0, 1)]
    ds = an.combine(singles)
    validate(ds)
    assert json.loads(ds.attrs["run_dims"]) == ["run"] and ds.sizes["run"] == 6
    assert {"k", "b_init"} <= set(ds.coords) and ds["k"].dims == ("run",)
    gridded = an.as_combined(ds)
    validate(gridded)
    assert json.loads(gridded.attrs["run_dims"]) == ["rule", "seed"]  # k, b_init: per rule
    assert gridded["k"].dims == ("rule",) and gridded["b_init"].dims == ("rule",)
    for form in (ds, gridded):
        parts = an.split_runs(form)
        assert len(parts) == 6
        for (_, run), original in zip(parts, singles, strict=True):
            assert run.attrs["rule"] == original.attrs["rule"]
            assert run.attrs["seed"] == original.attrs["seed"]
            assert json.loads(run.attrs["config"]) == json.loads(original.attrs["config"])
            np.testing.assert_array_equal(run["loss"].values, original["loss"].values)
    with pytest.raises(ValueError, match="already combines"):
        an.combine([ds])
    with pytest.raises(ValueError, match="given twice"):
        an.combine([singles[0], singles[0]], names=["a", "a"])
    with pytest.raises(ValueError, match="run0 and run1 share"):
        an.as_combined(an.combine([singles[0], singles[0]]))


def test_combine_matches_open_runs_on_recorded_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tiny_runs(tmp_path_factory)
    paths = [root / "bp" / "seed0", root / "pfa" / "seed0"]
    expected = open_runs(paths)
    combined = an.combine([open_run(p) for p in paths], names=[str(p) for p in paths])
    xr.testing.assert_identical(combined, expected)


def test_collapse_options_keeps_one_variant_per_rule(runs: xr.Dataset) -> None:
    out = an.collapse_options(runs)
    assert "k" not in out.dims and list(out["rule"].values) == ["bp", "fa", "pfa", "pfa_o"]
    assert out["k"].sel(rule="pfa") == 10 and out["k"].sel(rule="pfa_o") == 1
    assert json.loads(out.attrs["run_dims"]) == ["rule", "seed"]
    validate(out)
    sweep = an.combine([synthetic_run("pfa", 0, options={"k": k}) for k in (2, 10)])
    with pytest.raises(ValueError, match="keep"):
        an.collapse_options(sweep)
    assert an.collapse_options(sweep, keep=("k",)).sizes["k"] == 2


def test_seed_statistics() -> None:
    da = xr.DataArray(
        [[1.0, 2.0, 3.0], [4.0, np.nan, 8.0]], dims=("rule", "seed"), attrs={"units": "1"}
    )
    stats = an.seed_statistics(da)
    assert stats.dims == ("stat", "rule") and stats.attrs == {"units": "1"}
    np.testing.assert_allclose(stats.sel(stat="mean"), [2.0, 6.0])
    np.testing.assert_allclose(stats.sel(stat="std"), [1.0, np.sqrt(8.0)])
    np.testing.assert_allclose(stats.sel(stat="n"), [3, 2])
    np.testing.assert_allclose(stats.sel(stat="sem"), [1 / np.sqrt(3), 2.0])
    single = an.seed_statistics(xr.DataArray([1.0, 2.0], dims="step"))
    assert np.isnan(single.sel(stat="std")).all()


def test_accuracy_table_and_its_exports(runs: xr.Dataset) -> None:
    table = an.accuracy_table(runs)
    final = an.collapse_options(runs)["test_accuracy"].sel(rule="pfa").isel(step=-1) * 100
    assert float(table["final_mean"].sel(rule="pfa")) == pytest.approx(float(final.mean()))
    assert float(table["final_std"].sel(rule="pfa")) == pytest.approx(float(final.std(ddof=1)))
    assert (table["best_mean"] >= table["final_mean"] - 1e-12).all()
    assert table["best_mean"].attrs["units"] == "%" and int(table["seeds"].sel(rule="fa")) == 3
    markdown = an.to_markdown(table)
    lines = markdown.splitlines()
    assert lines[0] == "| rule | final (%) | best (%) | seeds |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| BP", "| FA", "| PFA", "| PFA-o"]
    assert " ± " in lines[2]
    csv = an.to_csv(table).splitlines()
    assert csv[0] == "rule,final_mean,final_std,best_mean,best_std,seeds" and len(csv) == 5
    latex = an.to_latex(table, caption="MNIST 5%", label="tab:acc")
    assert r"\begin{tabular}{lrrr}" in latex and r"\pm" in latex and r"5\%" in latex
    assert r"PFA-o & $" in latex


def test_accuracy_table_keeps_density_rows() -> None:
    ds = synthetic_runs(("bp", "fa"), (0, 1), densities=(1.0, 0.1))
    table = an.accuracy_table(ds, keep=("density",))
    frame = an.table_frame(table)
    assert list(frame.index.names) == ["rule", "density"] and len(frame) == 3
    assert "| FA | 0.1 |" in an.to_markdown(table)


# ------------------------------------------------------------------------------ trajectories
def test_per_epoch_resampling_keeps_attrs() -> None:
    da = xr.DataArray(
        [np.nan, 1.0, 2.0, 3.0, 4.0, 5.0],
        dims="step",
        coords={"step": np.arange(6), "epoch": ("step", [0, 0, 0, 1, 1, 2])},
        attrs={"long_name": "x", "units": "deg"},
    )
    np.testing.assert_array_equal(an.per_epoch(da).values, [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(an.per_epoch(da, how="last").values, [2.0, 4.0, 5.0])
    np.testing.assert_array_equal(an.per_epoch(da, how="mean").values, [1.5, 3.5, 5.0])
    out = an.per_epoch(da)
    assert out.attrs["long_name"] == "x" and out.dims == ("epoch",)
    assert out["epoch"].attrs["long_name"] == "epoch"
    with pytest.raises(ValueError, match="how"):
        an.per_epoch(da, how="median")  # type: ignore[arg-type]


def test_alignment_trajectories(runs: xr.Dataset) -> None:
    traj = runs.pipe(an.collapse_options).pipe(an.alignment_trajectories)
    assert set(traj.data_vars) == {"feedback_alignment", "feedback_norm_ratio", "grad_alignment"}
    assert traj["feedback_alignment"].dims == ("rule", "seed", "epoch", "layer")
    np.testing.assert_allclose(traj["depth"].values, [0.0, 0.5, 1.0])
    assert traj["feedback_alignment"].attrs["units"] == "deg"
    assert traj.sizes["epoch"] == 5


# ------------------------------------------------------------------------------ Fig. 3
def test_expansion_study_matches_the_closed_form() -> None:
    study = an.expansion_study(k=[1.0, 10.0], draws=20)
    summary = an.expansion_summary(study)
    angle = summary["angle_mean"]
    assert float(angle.sel(k=1.0)) == pytest.approx(45.0, abs=1.0)
    assert float(angle.sel(k=10.0)) == pytest.approx(17.55, abs=0.5)
    np.testing.assert_allclose(
        study["expected_angle"], expected_angle([1.0, 10.0], 1.0, 100, r_masked=False)
    )
    np.testing.assert_allclose(study["expected_angle_limit"], [45.0, 17.548], atol=1e-3)
    np.testing.assert_allclose(angle, study["expected_angle"], atol=0.3)
    np.testing.assert_allclose(summary["eigenvalues_mean"], 1.0, atol=0.02)
    np.testing.assert_allclose(
        summary["eigenvalues_std"] ** 2, marchenko_pastur([1.0, 10.0]).variance, rtol=0.1
    )
    assert float(summary["pfa_o_angle_mean"]) < 1e-6
    np.testing.assert_allclose(study["pfa_o_eigenvalues"], 1.0, atol=1e-9)
    assert study["eigenvalues"].dims == ("k", "draw", "eig") and study.sizes["eig"] == 100
    assert study["angle"].attrs["units"] == "deg"
    xr.testing.assert_identical(study, an.expansion_study(k=[1.0, 10.0], draws=20))


def test_expansion_study_over_density() -> None:
    study = an.expansion_study(k=[10.0], density=[1.0, 0.3], draws=5, n_out=40, n_in=60)
    assert study["angle"].dims == ("k", "density", "draw")
    path = an.expansion_summary(study)["path_angle_mean"].sel(k=10.0)
    assert float(path.sel(density=0.3)) > float(path.sel(density=1.0)) + 5


# ------------------------------------------------------------------------------ weight decay
def test_decay_alignment_on_synthetic_runs(runs: xr.Dataset) -> None:
    decay = an.decay_alignment(runs)
    error = decay["relative_error"]
    assert float(abs(error.sel(rule="pfa")).max()) < 1e-12
    assert error.sel(rule="bp").isnull().all()
    assert decay["residual_ratio"].attrs["long_name"] == "‖R − BᵀW‖ / first record"
    with pytest.raises(ValueError, match="feedback_residual"):
        an.decay_alignment(synthetic_runs(("bp",), (0,)))


def test_decay_matches_the_exact_recursion_on_a_recorded_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run = open_run(tiny_runs(tmp_path_factory) / "pfa" / "seed0")
    schedules = an.step_schedules(run)
    recorded = run[["lr", "weight_decay"]].sel(step=schedules["step"]).dropna("step")
    np.testing.assert_allclose(schedules["lr"].sel(step=recorded["step"]), recorded["lr"])
    np.testing.assert_allclose(
        schedules["weight_decay"].sel(step=recorded["step"]), recorded["weight_decay"]
    )
    assert schedules["weight_decay"].values[0] > schedules["weight_decay"].values[-1]
    decay = an.decay_alignment(run)
    c = decay_factors(schedules["lr"].values, schedules["weight_decay"].values, 0.9)
    np.testing.assert_allclose(decay["predicted_decay"], c[run["step"].values], rtol=1e-12)
    assert float(decay["predicted_decay"].isel(step=-1)) < 0.99
    assert float(abs(decay["relative_error"]).max()) < 1e-4
    np.testing.assert_allclose(an.predicted_decay(run), decay["predicted_decay"])


# ------------------------------------------------------------------------------ beyond the paper
def test_grad_alignment_by_depth(runs: xr.Dataset) -> None:
    out = an.collapse_options(runs).pipe(an.grad_alignment_by_depth, window=3)
    assert out["grad_alignment"].dims == ("stat", "rule", "layer")
    assert (out["grad_alignment"].sel(stat="mean", rule="bp") == 0).all()
    assert "update_norm_ratio" in out and "depth" in out.coords
    ratio = an.update_norm_ratio(runs)
    assert ratio.attrs["long_name"] == "update norm ratio"


def test_jacobian_distribution_and_spectra(runs: xr.Dataset) -> None:
    ds = an.collapse_options(runs)
    assert list(an.jacobian_steps(ds)) == [0, 5, 10, 15, 20]
    dist = an.jacobian_alignment_distribution(ds, bins=18)
    width = 10.0
    np.testing.assert_allclose(dist["histogram"].sel(rule="fa").sum("angle") * width, 1.0)
    np.testing.assert_allclose(dist["pooled"].sum("angle") * width, 1.0)
    median = dist["angle_quantile"].sel(quantile=0.5)
    expected = ds["jacobian_alignment"].sel(step=20).median(["seed", "sample"])
    np.testing.assert_allclose(median.transpose(*expected.dims), expected)
    spectra = an.singular_value_spectra(ds, step=10)
    assert spectra["sv_ratio"].dims == ("rule", "layer", "sv")
    np.testing.assert_allclose(spectra["sv_ratio"].sel(rule="bp"), 1.0)
    with pytest.raises(ValueError, match="recorded at"):
        an.jacobian_alignment_distribution(ds, step=3)


def test_linear_cka_invariances() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert an.linear_cka(x, x) == pytest.approx(1.0)
    assert an.linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)
    y = rng.normal(size=(30, 5))
    assert an.linear_cka(x, y) == pytest.approx(an.linear_cka(y, x))
    assert 0.0 <= an.linear_cka(x, y) < 0.6
    da = xr.DataArray(x.T, dims=("unit", "sample"))
    assert an.linear_cka(da, y) == pytest.approx(an.linear_cka(x, y))
    with pytest.raises(ValueError, match="samples"):
        an.linear_cka(x, y[:10])
    reps = xr.Dataset(
        {"fc1": (("rule", "sample", "unit"), np.stack([x, x @ q, rng.normal(size=(30, 8))]))}
    )
    matrix = an.cka_matrix(reps.assign_coords(rule=["a", "b", "c"]))
    assert matrix.dims == ("layer", "rule", "rule_b")
    np.testing.assert_allclose(np.diagonal(matrix.values[0]), 1.0)
    np.testing.assert_allclose(matrix.values[0], matrix.values[0].T)
    assert matrix.sel(layer="fc1", rule="a", rule_b="b") == pytest.approx(1.0)


def test_layer_outputs_of_a_converted_model() -> None:
    torch.manual_seed(0)
    model = convert(models.mlp(6, hidden=(5, 4), num_classes=3), "fa")
    run = synthetic_run("fa")
    reps = layer_outputs(model, probe_inputs(run))
    assert list(reps.data_vars) == ["fc1", "fc2", "fc3"]
    assert reps["fc2"].dims == ("sample", "fc2__feature") and reps["fc2"].shape == (4, 4)
    assert model.training
    expected = model.fc1(probe_inputs(run)).detach().numpy()
    np.testing.assert_allclose(reps["fc1"].values, expected, rtol=1e-6)


def test_trajectory_pca() -> None:
    run = synthetic_run("bp", raw=True)
    pca = an.trajectory_pca(run, quantity="update", n_components=2)
    assert pca["projection"].dims == ("layer", "raw_step", "component")
    assert list(pca["layer"].values) == ["fc1", "fc2", "fc3"]
    assert (pca["explained_variance_ratio"].sum("component") <= 1 + 1e-9).all()
    assert "raw_epoch" in pca.coords
    skipped = an.trajectory_pca(synthetic_run("bp"))
    assert not skipped.data_vars and "raw_layers" in skipped.attrs["skipped"]
