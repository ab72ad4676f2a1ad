"""Gradient alignment with BP (beyond the paper): the angle between each rule's update for W and
the true BP gradient, same weights, same batch.

(a) at the end of training vs relative depth, one line per rule (mean ± std over seeds);
(b) vs epoch, one panel per rule (BP omitted: 0° by definition), lines coloured by depth.

    python -m figures.fig_grad_alignment out/mnist_* --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analyses._common import select_variables
from analyses.gradients import grad_alignment_by_depth
from analyses.rules import rule_label
from analyses.runs import collapse_options, seed_statistics
from analyses.trajectories import per_epoch, with_depth
from figures import style
from figures._cli import run_figure
from figures.training import dense_runs

NAME = "fig_grad_alignment"
DATA = "grad_alignment"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not."""
    if "grad_alignment" not in ds or not bool(np.isfinite(ds["grad_alignment"]).any()):
        return "no gradient alignment recorded"
    return None


def figure_data(ds: xr.Dataset, *, window: int = 1, ddof: int = 1) -> xr.Dataset:
    """``final_grad_alignment`` (stat, rule, layer): the last ``window`` records of each run
    averaged, then over seeds; ``grad_alignment`` (stat, rule, epoch, layer) per epoch."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    ds = collapse_options(
        dense_runs(select_variables(ds, ["grad_alignment", "grad_norm", "grad_bp_norm"]))
    )
    final = grad_alignment_by_depth(ds, window=window, ddof=ddof)["grad_alignment"]
    final.attrs = {
        **final.attrs,
        "description": "At the end of training: " + final.attrs["description"],
    }
    out = xr.Dataset(
        {
            "final_grad_alignment": final,
            "grad_alignment": seed_statistics(per_epoch(ds["grad_alignment"]), ddof=ddof),
        }
    )
    out.attrs = {"figure": DATA}
    return with_depth(out).compute()  # lazy runs (open_runs) are read here, reduced


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def panel_depth(ds: xr.Dataset, ax: Axes) -> Axes:
    """(a) Final gradient alignment vs relative depth, one line per rule."""
    data = _prepared(ds)
    final = data["final_grad_alignment"]
    for rule in data["rule"].values:
        series = final.sel(rule=rule)
        if not np.isfinite(series.sel(stat="mean").values).any():
            continue
        style.band(
            ax,
            data["depth"].values,
            series.sel(stat="mean").values,
            series.sel(stat="std").values,
            color=style.rule_color(str(rule)),
            label=rule_label(str(rule)),
            marker="o",
            markersize=2.5,
        )
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-5.0, max(95.0, float(final.sel(stat="mean").max()) + 5.0))
    style.label_axes(ax, x=data["depth"], y=final)
    return ax


def panel_trajectory(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(b) Gradient alignment vs epoch for one rule, one line per layer coloured by depth."""
    data = _prepared(ds)
    da = data["grad_alignment"].sel(rule=rule, stat="mean")
    for layer in da["layer"].values:
        depth = float(data["depth"].sel(layer=layer))
        ax.plot(data["epoch"], da.sel(layer=layer), color=style.depth_color(depth), linewidth=0.8)
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    top = float(da.max())
    ax.set_ylim(-5.0, max(95.0, top + 5.0))
    if top <= 90:
        ax.set_yticks([0, 45, 90])
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    style.label_axes(ax, x=data["epoch"], y=da)
    return ax


def make_figure(ds: xr.Dataset) -> Figure:
    """The gradient-alignment figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    rules = [
        str(r)
        for r in data["rule"].values
        if r != "bp" and np.isfinite(data["grad_alignment"].sel(rule=r).values).any()
    ]
    cell_w, cell_h = style.CELL["layer"]
    acc_w, acc_h = style.CELL["accuracy"]
    width = max(acc_w + 1.2, len(rules) * cell_w + 0.8)
    with style.style():
        fig = style.new_figure(width, acc_h + (cell_h + 0.2 if rules else 0))
        parts = fig.subfigures(
            2 if rules else 1,
            1,
            height_ratios=[acc_h, cell_h + 0.2] if rules else None,
            squeeze=False,
        )[:, 0]
        left, _ = parts[0].subfigures(1, 2, width_ratios=[acc_w + 1.0, width - acc_w - 1.0])
        ax = left.subplots()
        panel_depth(data, ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        style.panel_letter(left, "a", "end of training")
        if rules:
            axes = parts[1].subplots(1, len(rules), squeeze=False)[0]
            for rule, ax in zip(rules, axes, strict=True):
                panel_trajectory(data, ax, rule=rule)
            style.depth_colorbar(parts[1], list(axes))
            style.panel_letter(parts[1], "b")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
