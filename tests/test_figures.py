"""Every figure on small synthetic runs that pass the schema check: it draws without warnings,
labels every axis from attrs, keeps text from overlapping and legends off the data, and saves
PDF (TrueType fonts), PNG, SVG and the Dataset it was drawn from."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from alignment.analyses import combine, expansion_study
from alignment.figures import (
    fig2_mnist,
    fig3_expansion,
    fig4_cifar10,
    fig5_imagenet,
    fig_decay,
    fig_grad_alignment,
    fig_jacobian,
    fig_sparse,
    fig_training,
    runinfo,
    style,
    training,
)
from alignment.recording.open import netcdf_engine
from tests.figure_checks import assert_legends_visible, assert_tidy
from tests.synthetic import synthetic_run, synthetic_runs


@pytest.fixture(scope="module")
def runs() -> xr.Dataset:
    return synthetic_runs()


@pytest.fixture(scope="module")
def sparse_runs() -> xr.Dataset:
    return synthetic_runs(("bp", "fa", "dfa", "usf", "pfa"), (0, 1), densities=(1.0, 0.3, 0.05))


@pytest.fixture(scope="module")
def study() -> xr.Dataset:
    return expansion_study(k=np.logspace(0, 2, 5), draws=4)


# ------------------------------------------------------------------------------ style
def test_rule_colours_are_fixed_and_distinct() -> None:
    paper = {"bp": "C0", "fa": "C1", "dfa": "C2", "pfa": "C3", "usf": "C4", "pfa_o": "C5"}
    assert {rule: style.rule_color(rule) for rule in paper} == paper
    extra = [style.rule_color(r) for r in ("kp", "frsf", "brsf")]
    assert len(set(extra) | set(paper.values())) == 9
    assert style.rule_color("my_rule") == style.rule_color("my_rule")


def test_a_new_rule_brings_its_own_label_and_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass

    from alignment.analyses.rules import alignment_kind, rule_label
    from alignment.rules import FA, RULES

    @dataclass(frozen=True)
    class Mine(FA):
        name = "mine"
        label = "My rule"
        color = "#123456"
        alignment_kind = "weight"

    monkeypatch.setitem(RULES, "mine", Mine)
    assert rule_label("mine") == "My rule" and style.rule_color("mine") == "#123456"
    assert alignment_kind("mine") == "weight" and rule_label("pfa_o") == "PFA-o"
    assert rule_label("unknown_rule") == "UNKNOWN-RULE"


def test_fonts_are_installed_truetype_and_labels_come_from_attrs() -> None:
    rc = style.rc()
    assert rc["pdf.fonttype"] == 42 and mpl.rcParams["pdf.fonttype"] == 42
    assert set(rc["font.sans-serif"]) <= {f.name for f in mpl.font_manager.fontManager.ttflist}
    assert style.axis_label({"long_name": "test accuracy", "units": "%"}) == "Test accuracy (%)"
    assert style.axis_label({"long_name": "path alignment", "units": "deg"}) == "Path alignment (°)"
    assert style.axis_label({"long_name": "norm ratio", "units": "1"}) == "Norm ratio"
    with pytest.raises(ValueError, match="long_name"):
        style.axis_label({"units": "1"})


# ------------------------------------------------------------------------------ every figure
RUN_FIGURES: dict[str, tuple[Callable[[xr.Dataset], Figure], str]] = {
    "fig2_mnist": (fig2_mnist.make_figure, "runs"),
    "fig_grad_alignment": (fig_grad_alignment.make_figure, "runs"),
    "fig_jacobian": (fig_jacobian.make_figure, "runs"),
    "fig_decay": (fig_decay.make_figure, "runs"),
    "fig_sparse": (fig_sparse.make_figure, "sparse_runs"),
}


@pytest.mark.parametrize("name", list(RUN_FIGURES))
def test_figure_from_synthetic_runs(name: str, request: pytest.FixtureRequest) -> None:
    make, fixture = RUN_FIGURES[name]
    fig = make(request.getfixturevalue(fixture))
    assert isinstance(fig, Figure)
    assert_tidy(fig)
    assert_legends_visible(fig)


def test_fig3_from_the_monte_carlo_study(study: xr.Dataset) -> None:
    fig = fig3_expansion.make_figure(study)
    assert_tidy(fig)
    assert_legends_visible(fig)
    left, right = fig.get_axes()[:2]
    assert left.get_xscale() == right.get_xscale() == "log"
    pfa_o = [line for line in right.get_lines() if line.get_linestyle() == "--"]
    assert pfa_o and np.allclose(pfa_o[0].get_ydata(), 0.0, atol=1e-9)


def test_training_figures_for_cifar_and_imagenet_datasets() -> None:
    cifar = synthetic_runs(("bp", "fa", "pfa"), (0,), data="cifar10", model="resnet20")
    imagenet = synthetic_runs(
        ("bp", "usf", "pfa", "pfa_o"), (0,), data="imagenet", model="resnet18"
    )
    assert fig4_cifar10.supports(cifar) is None and fig5_imagenet.supports(imagenet) is None
    assert "cifar10" in str(fig2_mnist.supports(cifar))
    assert_tidy(fig4_cifar10.make_figure(cifar))
    assert_tidy(fig5_imagenet.make_figure(imagenet))


def test_panels_return_their_axes(runs: xr.Dataset) -> None:
    data = training.figure_data(runs)
    fig = style.new_figure(4, 2)
    a, b, c = fig.subplots(1, 3)
    assert fig2_mnist.panel_accuracy(data, a) is a
    assert fig2_mnist.panel_alignment(data, b, rule="pfa") is b
    assert fig2_mnist.panel_norm_ratio(data, c, rule="fa") is c
    assert b.get_ylabel() == "Path alignment (°)" and c.get_ylabel() == "Weight norm ratio"
    lines = b.get_lines()
    assert len(lines) == runs.sizes["layer"]
    colours = [line.get_color() for line in lines]
    assert np.allclose(colours[0], mpl.colormaps["viridis"](0.0))
    assert np.allclose(colours[-1], mpl.colormaps["viridis"](1.0))


def test_figure_data_of_a_single_run_has_no_std() -> None:
    data = training.figure_data(synthetic_run("pfa"))
    assert data.sizes["rule"] == 1
    assert np.isnan(data["test_accuracy"].sel(stat="std")).all()
    assert_tidy(fig2_mnist.make_figure(data))


def test_accuracy_band_is_mean_plus_minus_std_over_seeds(runs: xr.Dataset) -> None:
    data = training.figure_data(runs)
    acc = data["test_accuracy"]
    final = runs["test_accuracy"].sel(rule="fa").dropna("step", how="all").isel(step=-1) * 100
    assert float(acc.sel(stat="mean", rule="fa").isel(epoch=-1)) == pytest.approx(
        float(final.mean())
    )
    assert float(acc.sel(stat="std", rule="fa").isel(epoch=-1)) == pytest.approx(
        float(final.std(ddof=1))
    )
    assert acc.attrs["units"] == "%"


def test_saving_writes_every_format_and_the_dataset(runs: xr.Dataset, tmp_path: Path) -> None:
    data = fig_decay.figure_data(runs)
    paths = style.save(fig_decay.make_figure(data), data, tmp_path, "decay")
    assert sorted(p.suffix for p in paths) == [".md", ".nc", ".pdf", ".png", ".svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    pdf = (tmp_path / "decay.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf
    with xr.open_dataset(tmp_path / "decay.nc", engine=netcdf_engine()) as back:
        np.testing.assert_allclose(back["residual_ratio"].values, data["residual_ratio"].values)
        assert back["residual_ratio"].attrs["units"] == "1"
    with pytest.raises(ValueError, match="format"):
        style.save(fig_decay.make_figure(data), data, tmp_path, "x", formats=("bmp",))


def test_figures_say_what_they_need(runs: xr.Dataset) -> None:
    assert "density" in str(fig_sparse.supports(runs))
    bp = synthetic_runs(("bp", "fa"), (0,))
    assert "residual" in str(fig_decay.supports(bp))
    with pytest.raises(ValueError, match="residual"):
        fig_decay.figure_data(bp)
    no_jacobians = runs.assign(jacobian_alignment=runs["jacobian_alignment"] * np.nan)
    assert "needs jacobian_alignment" in str(fig_jacobian.supports(no_jacobians))


# ------------------------------------------------------------------------------ honest figures
def test_the_legend_check_catches_hidden_entries() -> None:
    """assert_legends_visible fails on the faults it is for: an entry whose line is covered by an
    identical line of another colour (KP hiding PFA-o), one drawn outside the view, one
    transparent."""
    x = np.arange(5.0)
    for fault in ("covered", "outside", "transparent"):
        fig = style.new_figure(3, 2)
        ax = fig.subplots()
        ax.plot(x, x, color="C5", label="PFA-o", alpha=0.0 if fault == "transparent" else None)
        ax.plot(x, x if fault == "covered" else x + 1, color="C6", label="KP")
        ax.plot(x, x + (100 if fault == "outside" else 2), color="C0", label="BP")
        ax.set_ylim(-1, 10)
        ax.legend()
        with pytest.raises(AssertionError, match="legend entry"):
            assert_legends_visible(fig)
    fig = style.new_figure(3, 2)
    ax = fig.subplots()
    ax.stairs([0.2, 0.5], [0, 1, 2], color="C5", label="PFA-o")  # the same histogram twice
    ax.stairs([0.2, 0.5], [0, 1, 2], color="C6", label="KP")
    ax.legend()
    with pytest.raises(AssertionError, match="'PFA-o' is not visible"):
        assert_legends_visible(fig)
    fig = style.new_figure(3, 2)  # a box of zero height (all angles 0°) is a flat line at best
    ax = fig.subplots()
    ax.bar([0, 1], [0.0, 2.0], bottom=[0.0, 1.0], color=["C5", "C3"])
    ax.legend([Patch(facecolor="C5"), Patch(facecolor="C3")], ["PFA-o", "PFA"])
    with pytest.raises(AssertionError, match="'PFA-o' is not visible"):
        assert_legends_visible(fig)
    fig = style.new_figure(3, 2)
    ax = fig.subplots()
    ax.plot(x, x, color="C5", label="PFA-o")
    ax.plot(x, x + 1, color="C6", label="KP")
    ax.stairs([0.2, 0.5], [0, 1, 2], color="C0", label="BP")
    ax.legend()
    assert_legends_visible(fig)


def test_per_sample_figure_data_keep_layers_apart(runs: xr.Dataset) -> None:
    data = fig_jacobian.figure_data(runs)
    for name in ("jacobian_alignment", "delta_alignment"):
        assert {"layer", "sample", "seed", "rule"} <= set(data[name].dims), name
        assert data.sizes["layer"] == runs.sizes["layer"]
    last = int(runs["step"].max())
    expected = runs["jacobian_alignment"].sel(step=last).where(runs["rule"] == "pfa", drop=True)
    got = data["jacobian_alignment"].sel(rule="pfa").transpose("seed", "layer", "sample")
    np.testing.assert_allclose(got.values, expected.transpose("run", "layer", "sample").values)
    # the output layer reads 0° for every rule by construction: not drawn, and said so
    assert fig_jacobian.shown_layers(data) == ["fc1", "fc2"]
    assert "fc3 read 0°" in data.attrs["caption"]
    fig = fig_jacobian.make_figure(data)
    box_axes = [ax for ax in fig.get_axes() if ax.get_xlabel() == "Layer"]
    assert len(box_axes) == 2
    for ax in box_axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "fc2"]
        assert ax.get_ylim()[1] < 180  # the axis ends above the data, not at 180°


def test_captions_are_saved_beside_every_figure(runs: xr.Dataset, tmp_path: Path) -> None:
    from alignment.figures.build import build_figures

    written, skipped = build_figures(runs, tmp_path, formats=("png",))
    assert set(written) == {"fig2_mnist", "fig_grad_alignment", "fig_jacobian", "fig_decay"}
    for stem in written:
        caption = (tmp_path / f"{stem}.md").read_text()
        assert caption.startswith(f"**{stem}**. ") and "2 seed(s)" in caption, stem
        with xr.open_dataset(tmp_path / f"{stem}.nc", engine=netcdf_engine()) as back:
            assert back.attrs["caption"] == caption.split(". ", 1)[1].strip()
    bands = (tmp_path / "fig2_mnist.md").read_text()
    assert "band = ±1 standard deviation over seeds" in bands
    assert "4 probe samples × 2 seed(s)" in (tmp_path / "fig_jacobian.md").read_text()
    assert all("\n" not in reason for reason in skipped.values())


def test_the_title_is_the_data_set_the_records_name() -> None:
    mnist5k = synthetic_runs(("bp", "pfa"), (0,), data="mnist5k")
    fig = fig2_mnist.make_figure(mnist5k)
    titles = [f._suptitle.get_text() for f in fig.subfigs[0].subfigs if f._suptitle]
    assert any("MNIST-5k" in t for t in titles), titles
    own = synthetic_run("pfa")
    own.attrs["config"] = "{}"
    assert runinfo.dataset_names(own) == [""]
    own.attrs["tags"] = json.dumps({"data": "cifar10"})
    assert runinfo.dataset_names(own) == ["cifar10"]
    assert "do not name their data set" in str(fig2_mnist.supports(synthetic_unnamed()))
    assert fig_training.supports(synthetic_unnamed()) is None
    assert "fig2_mnist draws" in str(fig_training.supports(mnist5k))


def synthetic_unnamed() -> xr.Dataset:
    runs = [synthetic_run(rule, 0) for rule in ("bp", "pfa")]
    for run in runs:
        run.attrs["config"] = "{}"
    return combine(runs)


def test_small_nets_name_their_layers_deep_nets_show_depth() -> None:
    small = fig_grad_alignment.make_figure(synthetic_runs(("bp", "fa"), (0, 1)))
    legend_titles = [leg.get_title().get_text() for sub in small.subfigs for leg in sub.legends]
    assert "Layer" in legend_titles
    deep_layers = [f"block{i}" for i in range(12)]
    deep = fig_grad_alignment.make_figure(synthetic_runs(("bp", "fa"), (0,), layers=deep_layers))
    bars = [ax for ax in deep.get_axes() if ax.get_label() == "<colorbar>"]
    assert any(ax.get_ylabel() == "Relative depth" for ax in bars)
    assert_tidy(deep)


def test_predictions_are_drawn_dashed(runs: xr.Dataset) -> None:
    predicted = runs["feedback_alignment"] * 0 + 17.5
    data = training.figure_data(runs.assign(feedback_alignment_predicted=predicted))
    fig = style.new_figure(2, 2)
    ax = fig.subplots()
    training.panel_alignment(data, ax, rule="pfa")
    dashed = [line for line in ax.get_lines() if line.get_linestyle() not in ("-", "solid")]
    assert len(dashed) == runs.sizes["layer"]
    assert np.allclose(dashed[0].get_ydata(), 17.5)
    assert "dashed: the theory's prediction" in data.attrs["caption"]


def test_decay_uses_the_recorded_prediction_without_a_config() -> None:
    runs = [synthetic_run("pfa", seed) for seed in (0, 1)]
    for run in runs:
        run.attrs["config"] = "{}"  # an own-loop run: no trainer config
    own = combine(runs)
    residual = own["feedback_residual"].isel(layer=0)
    # what the recorder writes (added after combine: the schema may not list it yet)
    own["feedback_residual_predicted"] = (residual / residual.isel(step=0)).assign_attrs(
        long_name="predicted decay factor c_t", units="1", description="c_t"
    )
    assert fig_decay.supports(own) is None
    data = fig_decay.figure_data(own)
    assert float(data["relative_error"].max()) < 1e-12
    assert (
        data.attrs["prediction"] == "recorded"
        and "recorded by the Recorder" in data.attrs["caption"]
    )
    assert_tidy(fig_decay.make_figure(data))
    without = own.drop_vars("feedback_residual_predicted")
    assert fig_decay.supports(without) == (
        "needs the predicted factor c_t: the records have neither feedback_residual_predicted "
        "(the Recorder's c_t from the optimizer) nor a trainer config to recompute it from"
    )
    nan = own.assign(feedback_residual_predicted=own["feedback_residual_predicted"] * np.nan)
    assert "NaN in every run" in str(fig_decay.supports(nan))
    assert "(the runs are bp, fa)" in str(fig_decay.supports(synthetic_runs(("bp", "fa"), (0,))))


def test_log_axis_ticks_are_round_numbers(runs: xr.Dataset) -> None:
    fig = style.new_figure(2, 2)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [1.0, 0.38, 0.14])
    style.log_y(ax)
    assert list(ax.get_yticks()) == [0.2, 0.5, 1.0]


def test_runs_that_all_have_full_feedback() -> None:
    """FA and PFA runs, every one with density 1 (no BP, whose density is NaN): the grid's
    density dim has one value, which the figures drop."""
    runs = synthetic_runs(("fa", "pfa"), (0, 1))
    for module in (fig2_mnist, fig_grad_alignment, fig_jacobian, fig_decay):
        assert module.supports(runs) is None, module.NAME
        assert_tidy(module.make_figure(module.figure_data(runs)))
