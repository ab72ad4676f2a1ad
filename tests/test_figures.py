"""Every figure on small synthetic runs that pass the schema check: it draws without warnings,
labels every axis from attrs, keeps text from overlapping and legends off the data, and saves
PDF (TrueType fonts), PNG, SVG and the Dataset it was drawn from."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pytest
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from alignment.recording.open import netcdf_engine
from analyses import expansion_study
from figures import (
    fig2_mnist,
    fig3_expansion,
    fig4_cifar10,
    fig5_imagenet,
    fig_decay,
    fig_grad_alignment,
    fig_jacobian,
    fig_sparse,
    style,
    training,
)
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


# ------------------------------------------------------------------------------ checks
def _drawn(fig: Figure) -> None:
    FigureCanvasAgg(fig).draw()


def _ticklabels(ax: Axes) -> list[Text]:
    out = []
    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        low, high = sorted(lim)
        pad = 1e-9 * max(abs(low), abs(high), 1.0)
        for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False):
            if label.get_visible() and label.get_text() and low - pad <= loc <= high + pad:
                out.append(label)
    return out


def _texts(fig: Figure) -> list[Text]:
    texts: list[Text] = []
    for ax in fig.get_axes():
        texts += _ticklabels(ax)
        texts += [ax.xaxis.label, ax.yaxis.label, ax.title, ax._left_title, ax._right_title]
        if ax.get_legend() is not None:
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    for sub in [fig, *fig.subfigs, *(s for f in fig.subfigs for s in f.subfigs)]:
        texts += [t for t in (sub._suptitle,) if t is not None]
        for legend in sub.legends:
            texts += [*legend.get_texts(), legend.get_title()]
    return [t for t in texts if t.get_visible() and t.get_text()]


def assert_tidy(fig: Figure) -> None:
    """Labelled axes, no overlapping text, legends clear of every axes."""
    _drawn(fig)
    renderer = fig.canvas.get_renderer()
    for ax in fig.get_axes():
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel() or ax.get_xlabel(), "colour bar without a label"
            continue
        assert ax.get_xlabel(), f"axes {ax.get_title()!r} has no x label"
        assert ax.get_ylabel(), f"axes {ax.get_title()!r} has no y label"
    boxes = [(t, t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in _texts(fig)]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"texts overlap: {a.get_text()!r} / {b.get_text()!r}"
    width, height = fig.canvas.get_width_height()
    for text, box in boxes:
        assert box.x0 >= -1 and box.y0 >= -1, f"{text.get_text()!r} is cut off"
        assert box.x1 <= width + 1 and box.y1 <= height + 1, f"{text.get_text()!r} is cut off"
    legends = [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    legends += [
        leg
        for f in [fig, *fig.subfigs, *(s for x in fig.subfigs for s in x.subfigs)]
        for leg in f.legends
    ]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.get_axes():
            assert not box.overlaps(ax.get_window_extent(renderer)), "a legend covers an axes"


# ------------------------------------------------------------------------------ style
def test_rule_colours_are_fixed_and_distinct() -> None:
    paper = {"bp": "C0", "fa": "C1", "dfa": "C2", "pfa": "C3", "usf": "C4", "pfa_o": "C5"}
    assert {rule: style.rule_color(rule) for rule in paper} == paper
    extra = [style.rule_color(r) for r in ("kp", "frsf", "brsf")]
    assert len(set(extra) | set(paper.values())) == 9
    assert style.rule_color("my_rule") == style.rule_color("my_rule")


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


def test_fig3_from_the_monte_carlo_study(study: xr.Dataset) -> None:
    fig = fig3_expansion.make_figure(study)
    assert_tidy(fig)
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
