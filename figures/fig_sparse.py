"""Sparse feedback: best test accuracy vs feedback density ρ (log x) for FA, DFA, uSF and PFA
(mean ± std over seeds), with BP as a band (mean ± std).

    python -m alignment.figures.fig_sparse out/sparse_* out/mnist_bp --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from alignment.analyses.rules import rule_label
from alignment.analyses.runs import accuracy_table, as_combined
from alignment.figures import style
from alignment.figures._cli import run_figure
from alignment.figures.runinfo import count

NAME = "fig_sparse"
DATA = "sparse"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not."""
    ds = as_combined(ds)
    if "density" not in ds.dims:
        return "the runs do not differ in feedback density (rule option 'density')"
    if np.isfinite(ds["density"].values).sum() < 2:
        return "fewer than two feedback densities"
    return None


def figure_data(ds: xr.Dataset, *, ddof: int = 1) -> xr.Dataset:
    """Best and final test accuracy (%) per rule and density, mean ± std over seeds."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    table = accuracy_table(ds, keep=("density",), ddof=ddof)
    table["density"].attrs = {
        "long_name": "feedback density ρ",
        "units": "1",
        "description": "Fraction of feedback connections kept (Bernoulli mask).",
    }
    table.attrs = {**table.attrs, "figure": DATA}
    table = table.compute()  # lazy runs (open_runs) are read here, reduced
    seeds = count(table["seeds"].values)
    table.attrs["caption"] = (
        "Best test accuracy over training vs feedback density ρ (fraction of feedback "
        f"connections kept, log axis), {seeds} seed(s) per point: marker = mean, error bar = ±1 "
        "standard deviation over seeds; BP (dense by definition) as a line with a ±1 sd band."
    )
    return table


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def panel_accuracy_vs_density(ds: xr.Dataset, ax: Axes) -> Axes:
    """Best test accuracy vs density, one line per rule; BP as a horizontal band."""
    data = _prepared(ds)
    density = data["density"]
    finite = np.isfinite(density.values)
    for rule in data["rule"].values:
        rule = str(rule)
        row = data.sel(rule=rule)
        mean, std = row["best_mean"].values, row["best_std"].values
        if rule == "bp":
            value = mean[np.isfinite(mean)]
            if value.size:
                spread = std[np.isfinite(mean)][0]
                spread = spread if np.isfinite(spread) else 0.0
                ax.axhspan(
                    value[0] - spread,
                    value[0] + spread,
                    color=style.rule_color(rule),
                    alpha=0.3,
                    linewidth=0,
                )
                ax.axhline(value[0], color=style.rule_color(rule), linewidth=0.8, label="BP")
            continue
        ok = finite & np.isfinite(mean)
        if not ok.any():
            continue
        ax.errorbar(
            density.values[ok],
            mean[ok],
            yerr=np.nan_to_num(std[ok]),
            color=style.rule_color(rule),
            marker="o",
            markersize=3,
            capsize=1.5,
            label=rule_label(rule),
        )
    ax.set_xscale("log")
    values = np.sort(density.values[finite])
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.minorticks_off()
    style.label_axes(ax, x=density, y=data["best_mean"])
    return ax


def make_figure(ds: xr.Dataset) -> Figure:
    """The sparse-feedback figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    width, height = style.CELL["accuracy"]
    with style.style():
        fig = style.new_figure(width + 0.9, height)
        ax = fig.subplots()
        panel_accuracy_vs_density(data, ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
