"""Gradient alignment with BP (beyond the paper): the angle between each rule's update for W and
the true BP gradient, same weights, same batch.

(a) at the end of training, a heatmap rule × layer (mean over seeds, the number in each cell;
small nets name their layers, deep nets show relative depth); (b) vs epoch (vs step for runs
without epochs), one panel per rule (BP omitted: 0° by definition), one line per layer coloured by
depth, mean ± sd band over seeds (seaborn, from the long table).

    python -m alignment.figures.fig_grad_alignment out/mnist_* --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from alignment.analyses._common import label_step_coords, select_variables
from alignment.analyses.gradients import grad_alignment_by_depth
from alignment.analyses.jacobians import informative_layers
from alignment.analyses.rules import rule_label
from alignment.analyses.runs import collapse_options
from alignment.analyses.trajectories import per_epoch, with_depth
from alignment.figures import style
from alignment.figures._cli import run_figure
from alignment.figures.per_sample import layer_ticks
from alignment.figures.runinfo import layer_coords, seed_count
from alignment.figures.training import dense_runs, x_axis
from alignment.figures.trajectory_panels import layer_lines

NAME = "fig_grad_alignment"
DATA = "grad_alignment"
HEATMAP = "mako_r"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not (one line)."""
    if "grad_alignment" not in ds or not bool(np.isfinite(ds["grad_alignment"]).any()):
        return "needs grad_alignment, which the runs did not record (excluded from the Recorder?)"
    return None


def figure_data(ds: xr.Dataset, *, window: int = 1, ddof: int = 1) -> xr.Dataset:
    """``final_grad_alignment`` (stat, rule, layer): the last ``window`` records of each run
    averaged, then mean/std/sem/n over seeds; ``grad_alignment`` (rule, seed, epoch or step,
    layer) per epoch (first record) or per recorded step, seeds kept for the sd bands. Attr
    ``caption`` says what is drawn."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    source = collapse_options(
        dense_runs(select_variables(ds, ["grad_alignment", "grad_norm", "grad_bp_norm"]))
    )
    by_depth = grad_alignment_by_depth(source, window=window, ddof=ddof)
    final = by_depth["grad_alignment"]
    final.attrs = {
        **final.attrs,
        "description": "At the end of training: " + final.attrs["description"],
    }
    x = x_axis(source)
    series = source["grad_alignment"]
    series = per_epoch(series) if x == "epoch" else series
    out = label_step_coords(xr.Dataset({"final_grad_alignment": final, "grad_alignment": series}))
    if "update_norm_ratio" in by_depth:
        out["final_update_norm_ratio"] = by_depth["update_norm_ratio"]
    out.attrs = {"figure": DATA, "x": x, "seeds": seed_count(source)}
    out = layer_coords(source, with_depth(out)).compute()  # lazy runs are read here, reduced
    out.attrs["caption"] = caption(out)
    return out


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    x = data.attrs.get("x", "epoch")
    hidden = [str(la) for la in data["layer"].values if str(la) not in shown_layers(data)]
    return (
        "Angle between each rule's weight update and the true BP gradient (same weights, same "
        f"batch), {data.attrs.get('seeds', '1')} seed(s) per rule. (a) at the last record, mean "
        "over seeds, per rule and layer; "
        + (
            "(b) the norm of the rule's update over the BP gradient's, same records (1: the "
            "same step size). (c) vs "
            if "final_update_norm_ratio" in data
            else "(b) vs "
        )
        + f"{'epoch (first record of each)' if x == 'epoch' else 'training step'}, one line per "
        "layer: mean over seeds, band = ±1 standard deviation over seeds (none for a single "
        "seed); BP is 0° by definition and not drawn."
        + (
            f" Layers {', '.join(hidden)} read 0° under every rule and are left out."
            if hidden
            else ""
        )
    )


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def shown_layers(data: xr.Dataset) -> list[str]:
    """Layers whose gradient alignment carries information: not 0° for every rule (the output
    layer receives the exact error under every rule here)."""
    return informative_layers(data["final_grad_alignment"].sel(stat="mean"), tolerance=0.01)


def _rules(data: xr.Dataset) -> list[str]:
    mean = data["final_grad_alignment"].sel(stat="mean")
    return [str(r) for r in data["rule"].values if np.isfinite(mean.sel(rule=r).values).any()]


def panel_heatmap(
    ds: xr.Dataset, ax: Axes, *, variable: str = "final_grad_alignment", colorbar: bool = True
) -> Axes:
    """(a) Final gradient alignment (or (b), ``variable="final_update_norm_ratio"``: the update's
    norm over the BP gradient's, centred at 1), rule × layer heatmap, mean over seeds, annotated."""
    data = _prepared(ds)
    rules = _rules(data)
    layers = shown_layers(data)
    mean = data[variable].sel(stat="mean", rule=rules, layer=layers)
    values = mean.transpose("rule", "layer").values
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 90.0
    if variable == "final_grad_alignment":
        scale = {"vmin": 0.0, "vmax": max(90.0, top), "cmap": HEATMAP, "fmt": ".0f"}
    else:
        # a diverging map on [0, 2] is centred at 1 (seaborn's center= warns under matplotlib 3.11)
        scale = {"vmin": 0.0, "vmax": 2.0, "cmap": "vlag", "fmt": ".2f"}
    sns.heatmap(
        values,
        ax=ax,
        annot=len(layers) <= 12,
        annot_kws={"fontsize": style.FONT_SIZE - 2},
        linewidths=0.4,
        linecolor="white",
        cbar=colorbar,
        cbar_kws={"label": style.axis_label(mean), "shrink": 0.9},
        xticklabels=layer_ticks(data, layers),
        yticklabels=[rule_label(r) for r in rules],
        **scale,
    )
    ax.tick_params(axis="y", labelrotation=0)
    if style.names_layers(layers) and max(len(la) for la in layers) > 5:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    named = style.names_layers(layers)
    ax.set_xlabel("Layer" if named else "Relative depth")
    ax.set_ylabel("Rule")
    return ax


def panel_trajectory(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(b) Gradient alignment vs epoch for one rule, one line per layer coloured by depth, mean
    ± sd over seeds (seaborn ``lineplot`` on the long table)."""
    data = _prepared(ds)
    layers = shown_layers(data)
    layer_lines(data, ax, "grad_alignment", rule=rule, layers=layers)
    values = data["grad_alignment"].sel(rule=rule, layer=layers).values
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 90.0
    high = max(95.0, top + 5.0)
    ax.set_ylim(-5.0, high)
    ax.set_yticks([tick for tick in (0, 45, 90, 135, 180) if tick <= high])
    return ax


def make_figure(ds: xr.Dataset) -> Figure:
    """The gradient-alignment figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    rules = [r for r in _rules(data) if r != "bp"]
    cell_w, cell_h = style.CELL["layer"]
    n_layers = len(shown_layers(data))
    heat_w = 1.6 + 0.38 * min(n_layers, 24)
    heat_h = max(1.9, 0.9 + 0.2 * len(_rules(data)))
    width = max(2 * heat_w + 0.4, len(rules) * cell_w + 2.2)
    rows = [heat_h] + ([cell_h + 0.2] if rules else [])
    with style.style():
        fig = style.new_figure(width, sum(rows))
        parts = fig.subfigures(len(rows), 1, height_ratios=rows, squeeze=False)[:, 0]
        ratio = "final_update_norm_ratio" in data
        left, right = parts[0].subfigures(1, 2, width_ratios=[heat_w, max(width - heat_w, 0.01)])
        panel_heatmap(data, left.subplots())
        style.panel_letter(left, "a", "gradient alignment, end of training")
        if ratio:
            inner, _ = right.subfigures(1, 2, width_ratios=[heat_w, max(width - 2 * heat_w, 0.01)])
            panel_heatmap(data, inner.subplots(), variable="final_update_norm_ratio")
            style.panel_letter(inner, "b", "update norm / BP gradient norm")
        if rules:
            axes = parts[1].subplots(1, len(rules), squeeze=False)[0]
            for rule, ax in zip(rules, axes, strict=True):
                panel_trajectory(data, ax, rule=rule)
            style.layer_key(parts[1], list(axes), data, layers=shown_layers(data))
            style.panel_letter(parts[1], "c" if ratio else "b", "mean ± sd over seeds")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
