"""The layout shared by Fig. 2 (MNIST), Fig. 4 (CIFAR-10) and Fig. 5 (ImageNet).

(a) test accuracy vs epoch, one line per rule, mean ± std band over seeds, the legend (with the
final accuracy) outside the axes; (b) alignment vs epoch, one panel per rule (FA, uSF, …:
weight alignment; PFA, PFA-o: path alignment; DFA: feedback map vs mean Jacobian), one line per
layer coloured by depth (viridis) with a colour bar; (c) norm ratio, same layout. Values are
taken at the first record of each epoch (the paper logs at epoch starts) and averaged over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analyses._common import labelled, select_variables
from analyses.rules import alignment_kind, rule_label
from analyses.runs import as_combined, collapse_options, seed_statistics
from analyses.trajectories import per_epoch, with_depth
from figures import style

DATA = "training"
MNIST_LIKE = ("mnist", "mnist5k", "digits", "fashion_mnist")


def dense_runs(ds: xr.Dataset) -> xr.Dataset:
    """Only runs with full feedback (density 1, or rules without a density option)."""
    ds = as_combined(ds, keep=("density",))
    if "density" not in ds.dims:
        return ds
    keep = [i for i, v in enumerate(ds["density"].values) if np.isnan(v) or v == 1.0]
    if not keep:
        raise ValueError("no dense runs (density 1) among the given runs")
    out = ds.isel(density=keep)
    return out.squeeze("density", drop=True) if out.sizes["density"] == 1 else out


def datasets_of(ds: xr.Dataset) -> list[str]:
    """The ``data.name`` of every run (one entry per distinct name)."""
    config = json.loads(ds.attrs["config"])
    configs = config if isinstance(config, list) else [config]
    return sorted({c["data"]["name"] for c in configs})


def supports(ds: xr.Dataset, *, datasets: Sequence[str]) -> str | None:
    """None if the runs can draw a training figure for ``datasets``, else why not."""
    names = datasets_of(ds)
    if not set(names) <= set(datasets):
        return f"the runs are on {', '.join(names)}, not {' or '.join(datasets)}"
    if "test_accuracy" not in ds:
        return "the runs record no test accuracy"
    try:
        dense_runs(ds)
    except ValueError as error:
        return str(error)
    return None


def figure_data(ds: xr.Dataset, *, how: str = "first", ddof: int = 1) -> xr.Dataset:
    """The figure's Dataset: ``test_accuracy`` in % and ``feedback_alignment``,
    ``feedback_norm_ratio`` per epoch, each with a ``stat`` dim (mean, std, sem, n over seeds)."""
    names = [n for n in ("test_accuracy", "feedback_alignment", "feedback_norm_ratio") if n in ds]
    ds = collapse_options(dense_runs(select_variables(ds, names)))
    if "test_accuracy" not in names:
        raise ValueError("the runs record no test_accuracy")
    epochs = per_epoch(ds[names], how=how)  # type: ignore[arg-type]
    epochs["test_accuracy"] = labelled(epochs["test_accuracy"] * 100.0, "test accuracy", "%")
    out = seed_statistics(epochs, ddof=ddof)
    out.attrs = {"figure": DATA, "datasets": json.dumps(datasets_of(ds)), "how": how}
    return with_depth(out).compute()  # lazy runs (open_runs) are read here, reduced


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def layer_rules(data: xr.Dataset) -> list[str]:
    """Rules with a per-layer alignment to show (all but BP), in paper order."""
    if "feedback_alignment" not in data:
        return []
    mean = data["feedback_alignment"].sel(stat="mean")
    return [
        str(r)
        for r in data["rule"].values
        if r != "bp" and np.isfinite(mean.sel(rule=r).values).any()
    ]


def final_accuracy(data: xr.Dataset, rule: str) -> tuple[float, float]:
    """Mean and std of the last evaluated accuracy of ``rule``."""
    acc = data["test_accuracy"].sel(rule=rule)
    ok = np.flatnonzero(np.isfinite(acc.sel(stat="mean").values))
    if not len(ok):
        return float("nan"), float("nan")
    last = acc.isel(epoch=int(ok[-1]))
    return float(last.sel(stat="mean")), float(last.sel(stat="std"))


def panel_accuracy(ds: xr.Dataset, ax: Axes, *, legend: bool = False) -> Axes:
    """(a) Test accuracy vs epoch, one line per rule, mean ± std band over seeds."""
    data = _prepared(ds)
    acc = data["test_accuracy"]
    for rule in data["rule"].values:
        series = acc.sel(rule=rule)
        if not np.isfinite(series.sel(stat="mean").values).any():
            continue
        style.band(
            ax,
            data["epoch"].values,
            series.sel(stat="mean").values,
            series.sel(stat="std").values,
            color=style.rule_color(str(rule)),
            label=rule_label(str(rule)),
        )
    trained = acc.sel(stat="mean").where(data["epoch"] >= 1)
    low = float((trained - acc.sel(stat="std").fillna(0)).min()) if trained.notnull().any() else 0
    ax.set_ylim((np.floor(low / 5) * 5 if low > 80 else 0.0), 100.0)
    ax.set_xlim(float(data["epoch"].min()), float(data["epoch"].max()))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    style.label_axes(ax, x=data["epoch"], y=acc)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax


def _per_layer(data: xr.Dataset, ax: Axes, name: str, rule: str, long_name: str) -> Axes:
    da = data[name].sel(rule=rule, stat="mean")
    for layer in da["layer"].values:
        ax.plot(
            data["epoch"].values,
            da.sel(layer=layer).values,
            color=style.depth_color(float(data["depth"].sel(layer=layer))),
            alpha=0.8,
            linewidth=0.8,
        )
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    ax.set_xlim(float(data["epoch"].min()), float(data["epoch"].max()))
    style.label_axes(ax, x=data["epoch"], y=labelled(da, long_name, da.attrs["units"]))
    return ax


def panel_alignment(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(b) Alignment vs epoch for one rule, one line per layer coloured by depth."""
    data = _prepared(ds)
    _per_layer(data, ax, "feedback_alignment", rule, f"{alignment_kind(rule)} alignment")
    top = float(data["feedback_alignment"].sel(rule=rule, stat="mean").max())
    ax.set_ylim(-5.0, max(100.0, top + 5.0))
    if top <= 100:
        ax.set_yticks([0, 50, 100])
    return ax


def panel_norm_ratio(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(c) Norm ratio vs epoch for one rule, one line per layer coloured by depth."""
    data = _prepared(ds)
    _per_layer(data, ax, "feedback_norm_ratio", rule, f"{alignment_kind(rule)} norm ratio")
    top = float(data["feedback_norm_ratio"].sel(rule=rule, stat="mean").max())
    ax.set_ylim(0.0, max(3.0, 1.05 * top))
    return ax


def _legend_labels(data: xr.Dataset) -> tuple[list, list[str]]:
    handles, labels = [], []
    for rule in data["rule"].values:
        mean, std = final_accuracy(data, str(rule))
        if not np.isfinite(mean):
            continue
        spread = f" ± {std:.2f}" if np.isfinite(std) else ""
        handles.append(style.Line2D([], [], color=style.rule_color(str(rule)), linewidth=1.5))
        labels.append(f"{rule_label(str(rule))}  {mean:.2f}{spread} %")
    return handles, labels


def make_figure(ds: xr.Dataset, *, title: str | None = None) -> Figure:
    """The three-row figure of Fig. 2/4/5 from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    rules = layer_rules(data)
    n = max(len(rules), 1)
    cell_w, cell_h = style.CELL["layer"]
    acc_w, acc_h = style.CELL["accuracy"]
    width = max(acc_w + 2.2, n * cell_w + 0.8)
    rows = [acc_h] + ([cell_h + 0.2] * 2 if rules else [])
    with style.style():
        fig = style.new_figure(width, sum(rows))
        parts = fig.subfigures(len(rows), 1, height_ratios=rows, squeeze=False)[:, 0]
        top_left, top_right = parts[0].subfigures(1, 2, width_ratios=[acc_w, width - acc_w])
        panel_accuracy(data, top_left.subplots())
        style.panel_letter(top_left, "a", title or "")
        handles, labels = _legend_labels(data)
        top_right.legend(
            handles, labels, loc="center left", frameon=False, title="Final test accuracy"
        )
        for part, letter, panel in zip(
            parts[1:], "bc", (panel_alignment, panel_norm_ratio), strict=False
        ):
            axes = part.subplots(1, n, squeeze=False)[0]
            for rule, ax in zip(rules, axes, strict=True):
                panel(data, ax, rule=rule)
            style.depth_colorbar(part, list(axes))
            style.panel_letter(part, letter)
    return fig
