"""Weight decay aligns the product exactly (spec §3.1): the recorded residual ‖R − BᵀW‖ (KP:
‖B − W‖) relative to its first record, per layer, against the factor c_t that the run's own lr
and weight-decay schedules predict, on a log y-axis; below, the relative deviation.

One column per rule that records a residual (PFA, PFA-o, KP); seeds overlap (c_t does not depend
on the data), so the ratio is their mean and the deviation their largest.

    python -m figures.fig_decay out/mnist_pfa out/mnist_pfa_o --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analyses._common import select_variables
from analyses.decay import decay_alignment
from analyses.rules import rule_label
from analyses.runs import as_combined, collapse_options
from analyses.trajectories import with_depth
from figures import style
from figures._cli import run_figure

NAME = "fig_decay"
DATA = "decay"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not."""
    if "feedback_residual" not in ds or not bool(np.isfinite(ds["feedback_residual"]).any()):
        return "no run records a feedback residual (PFA, PFA-o and KP do)"
    return None


def figure_data(ds: xr.Dataset) -> xr.Dataset:
    """:func:`analyses.decay_alignment` of the runs with a residual, reduced over seeds:
    ``residual_ratio`` (mean), ``predicted_decay`` (mean; equal across seeds) and
    ``relative_error`` (largest |deviation|), dims (rule, step[, layer])."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    keep = ("density",) if "density" in ds.coords else ()
    ds = collapse_options(as_combined(select_variables(ds, ["feedback_residual"])), keep=keep)
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
    out.attrs = {"figure": DATA}
    return with_depth(out).compute()  # lazy runs (open_runs) are read here, reduced


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def _steps(da: xr.DataArray) -> xr.DataArray:
    return da.dropna("step", how="all")


def panel_decay(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """Recorded ‖D_t‖/‖D_0‖ per layer (markers, coloured by depth) and c_t (black line)."""
    data = _prepared(ds)
    ratio = _steps(data["residual_ratio"].sel(rule=rule))
    c = _steps(data["predicted_decay"].sel(rule=rule))
    ax.plot(c["step"], c, color="k", linewidth=1.0, zorder=1)
    for layer in ratio["layer"].values:
        color = style.depth_color(float(data["depth"].sel(layer=layer)))
        series = ratio.sel(layer=layer)
        ax.plot(ratio["step"], series, "o", color=color, markersize=2.0, alpha=0.8, zorder=2)
    style.log_y(ax)
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
    style.label_axes(ax, x=data["step"], y=data["relative_error"])
    return ax


def make_figure(ds: xr.Dataset) -> Figure:
    """The weight-decay figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    rules = [str(r) for r in data["rule"].values]
    cell_w, cell_h = style.CELL["expansion"]
    with style.style():
        fig = style.new_figure(len(rules) * cell_w + 0.8, 2 * cell_h + 0.3)
        axes = fig.subplots(2, len(rules), squeeze=False)
        for rule, top, bottom in zip(rules, axes[0], axes[1], strict=True):
            panel_decay(data, top, rule=rule)
            panel_deviation(data, bottom, rule=rule)
        style.depth_colorbar(fig, list(axes.ravel()), shrink=0.5)
        fig.legend(
            [
                Line2D([], [], color="k"),
                Line2D([], [], color="0.4", marker="o", linestyle="", markersize=3),
            ],
            ["predicted c_t", "recorded (per layer)"],
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
