"""Weight decay aligns the product exactly (alignment.theory, property 1): the recorded residual
‖R − BᵀW‖ (KP: ‖B − W‖) relative to its first record, per layer, against the factor c_t that the
optimizer's lr, momentum and weight-decay schedule predict, on a log y-axis; below, the relative
deviation. c_t is the recorded ``feedback_residual_predicted`` (own-loop runs too), else it is
recomputed from the trainer config.

One column per rule that records a residual (PFA, PFA-o, KP); seeds overlap (c_t does not depend
on the data), so the ratio is their mean and the deviation their largest.

    python -m alignment.figures.fig_decay out/mnist_pfa out/mnist_pfa_o --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from alignment.analyses._common import select_variables
from alignment.analyses.decay import PREDICTED, decay_alignment, run_config
from alignment.analyses.rules import rule_label
from alignment.analyses.runs import as_combined, collapse_options, split_runs
from alignment.analyses.trajectories import with_depth
from alignment.figures import style
from alignment.figures._cli import run_figure
from alignment.figures.runinfo import layer_coords, seed_count

NAME = "fig_decay"
DATA = "decay"


def _rules(ds: xr.Dataset) -> str:
    rules = ds.attrs.get("rule")
    if "rule" in ds.coords:
        rules = sorted({str(r) for r in np.asarray(ds["rule"].values).ravel() if str(r)})
    return ", ".join(rules) if isinstance(rules, list) else str(rules or "?")


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not (one line)."""
    if "feedback_residual" not in ds or not bool(np.isfinite(ds["feedback_residual"]).any()):
        return (
            "needs feedback_residual, which only PFA, PFA-o and KP record "
            f"(the runs are {_rules(ds)})"
        )
    runs = [
        run
        for _, run in split_runs(ds)
        if bool(np.isfinite(np.asarray(run["feedback_residual"].values)).any())
    ]
    predicted = [run[PREDICTED] for run in runs if PREDICTED in run]
    if any(bool(np.isfinite(np.asarray(c.values)).any()) for c in predicted):
        return None
    if predicted and len(predicted) == len(runs):
        return (
            "the recorded c_t (feedback_residual_predicted) is NaN in every run: the identity "
            "holds only for torch.optim.SGD with coupled weight decay on W and the feedback"
        )
    configs = [run_config_or_none(run) for run in runs]
    if any(config is None for config in configs):
        return (
            "needs the predicted factor c_t: the records have neither feedback_residual_predicted "
            "(the Recorder's c_t from the optimizer) nor a trainer config to recompute it from"
        )
    return None


def run_config_or_none(run: xr.Dataset) -> object | None:
    """The run's trainer config, or None for a run without one (own loop)."""
    try:
        return run_config(run)
    except ValueError:
        return None


def figure_data(ds: xr.Dataset) -> xr.Dataset:
    """:func:`alignment.analyses.decay_alignment` of the runs with a residual, reduced over seeds:
    ``residual_ratio`` (mean), ``predicted_decay`` (mean; equal across seeds) and
    ``relative_error`` (largest |deviation|), dims (rule, step[, layer])."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    keep = ("density",) if "density" in ds.coords else ()
    ds = collapse_options(
        as_combined(select_variables(ds, ["feedback_residual", PREDICTED])), keep=keep
    )
    decay = decay_alignment(ds)
    has = (
        decay["residual_ratio"]
        .notnull()
        .any([d for d in decay["residual_ratio"].dims if d != "rule"])
    )
    decay = decay.sel(rule=decay["rule"].values[has.values])
    pooled = [d for d in decay["residual_ratio"].dims if d not in ("rule", "step", "layer")]
    out = xr.Dataset(
        {
            "residual_ratio": decay["residual_ratio"].mean(pooled, keep_attrs=True),
            "predicted_decay": decay["predicted_decay"].mean(pooled, keep_attrs=True),
            "relative_error": abs(decay["relative_error"]).max(pooled, keep_attrs=True),
        }
    )
    out["relative_error"].attrs["long_name"] = "|relative deviation from c_t|"
    recorded = PREDICTED in ds and bool(np.isfinite(ds[PREDICTED]).any())
    out.attrs = {
        "figure": DATA,
        "prediction": "recorded" if recorded else "config",
        "seeds": seed_count(ds),
    }
    out = layer_coords(ds, with_depth(out)).compute()  # lazy runs are read here, reduced
    out.attrs["caption"] = caption(out)
    return out


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    source = (
        "recorded by the Recorder from the optimizer"
        if data.attrs.get("prediction") == "recorded"
        else "recomputed from the trainer config's lr, momentum and weight-decay schedules"
    )
    return (
        "Weight decay aligns PFA's product exactly (theory property 1). Top: the residual "
        "‖R − BᵀW‖ (KP: ‖B − W‖) of each layer over its first recorded value (markers, "
        "coloured by layer), mean over "
        f"{data.attrs.get('seeds', '1')} seed(s), and the predicted factor c_t (black line, "
        f"{source}; the same for every seed). Bottom: |recorded / c_t − 1|, the largest over "
        "seeds; 0 up to float rounding while the identity holds. No bands: seeds agree."
    )


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def _steps(da: xr.DataArray) -> xr.DataArray:
    return da.dropna("step", how="all")


def panel_decay(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """Recorded ‖R − BᵀW‖ over its first value per layer (markers, coloured by depth) and c_t
    (black line)."""
    data = _prepared(ds)
    ratio = _steps(data["residual_ratio"].sel(rule=rule))
    c = _steps(data["predicted_decay"].sel(rule=rule))
    ax.plot(c["step"], c, color="k", linewidth=1.0, zorder=1)
    for layer in ratio["layer"].values:
        color = style.depth_color(float(data["depth"].sel(layer=layer)))
        series = ratio.sel(layer=layer)
        ax.plot(ratio["step"], series, "o", color=color, markersize=2.0, alpha=0.8, zorder=2)
    style.log_y(ax)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    style.label_axes(ax, x=data["step"], y=data["residual_ratio"])
    return ax


def panel_deviation(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """|recorded ratio / c_t − 1| per layer vs step (log y where any deviation is non-zero)."""
    data = _prepared(ds)
    error = _steps(data["relative_error"].sel(rule=rule))
    positive = error.where(error > 0)
    for layer in error["layer"].values:
        color = style.depth_color(float(data["depth"].sel(layer=layer)))
        series = positive.sel(layer=layer) if positive.notnull().any() else error.sel(layer=layer)
        ax.plot(error["step"], series, "o-", color=color, markersize=2.0, linewidth=0.6)
    if positive.notnull().any():
        style.log_y(ax)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    style.label_axes(ax, x=data["step"], y=data["relative_error"])
    return ax


def make_figure(ds: xr.Dataset) -> Figure:
    """The weight-decay figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    rules = [str(r) for r in data["rule"].values]
    cell_w, cell_h = style.CELL["expansion"]
    with style.style():
        key = 2.6 if style.names_layers(data["layer"].values) else 0.8  # layer legend or bar
        fig = style.new_figure(max(len(rules) * cell_w + key, 4.6), 2 * cell_h + 0.3)
        axes = fig.subplots(2, len(rules), squeeze=False)
        for rule, top, bottom in zip(rules, axes[0], axes[1], strict=True):
            panel_decay(data, top, rule=rule)
            panel_deviation(data, bottom, rule=rule)
        style.layer_key(fig, list(axes.ravel()), data, shrink=0.5)
        fig.legend(
            [
                Line2D([], [], color="k"),
                Line2D([], [], color="0.4", marker="o", linestyle="", markersize=3),
            ],
            ["predicted factor c_t", "recorded, per layer"],
            loc="outside upper center",
            ncols=2,
            frameon=False,
        )
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
