"""Trajectory panels shared by the network-dynamics figures: a per-record quantity vs epoch (or
step), mean ± sd band over seeds drawn by seaborn's ``lineplot`` from the long table, either one
line per layer (coloured by depth) for one rule, or one line per rule (its colour) for one
layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from alignment.analyses.rules import rule_label
from alignment.figures import style


def x_name(data: xr.Dataset) -> str:
    """'epoch' or 'step', as the figure's Dataset says (attr ``x``)."""
    return str(data.attrs.get("x", "epoch"))


def long_frame(da: xr.DataArray) -> pd.DataFrame:
    """One row per finite value: the dims as columns, the value in ``value``."""
    frame = da.rename("value").to_dataframe().reset_index()
    return frame[np.isfinite(frame["value"].to_numpy(dtype=float))]


def _lines(ax: Axes, frame: pd.DataFrame, x: str, hue: str, palette: dict[str, object]) -> None:
    sns.lineplot(
        frame,
        x=x,
        y="value",
        hue=hue,
        hue_order=list(palette),
        palette=palette,
        errorbar="sd",
        estimator="mean",
        ax=ax,
        linewidth=0.9,
        legend=False,
        err_kws={"alpha": 0.25, "linewidth": 0},
        marker="o" if frame[x].nunique() < 4 else None,
        markersize=2.5,
    )


def _finish(ax: Axes, data: xr.Dataset, da: xr.DataArray) -> Axes:
    x = x_name(data)
    ax.set_xlim(float(data[x].min()), float(data[x].max()))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    style.label_axes(ax, x=data[x], y=da)
    return ax


def layer_lines(
    data: xr.Dataset, ax: Axes, name: str, *, rule: str, layers: Sequence[str] | None = None
) -> Axes:
    """``data[name]`` (rule, seed, epoch or step, layer) of one rule vs epoch, one line per layer
    coloured by depth, mean ± sd band over seeds; the rule as the title."""
    da = data[name].sel(rule=rule)
    layers = [str(la) for la in (data["layer"].values if layers is None else layers)]
    frame = long_frame(da.sel(layer=layers))
    frame["layer"] = frame["layer"].astype(str)
    palette = {la: style.depth_color(float(data["depth"].sel(layer=la))) for la in layers}
    _lines(ax, frame, x_name(data), "layer", palette)
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    return _finish(ax, data, da)


def rule_lines(data: xr.Dataset, ax: Axes, name: str, *, layer: str, rules: Sequence[str]) -> Axes:
    """``data[name]`` (rule, seed, epoch or step, layer) of one layer vs epoch, one line per rule
    in its colour, mean ± sd band over seeds; the layer as the title."""
    da = data[name].sel(layer=layer)
    frame = long_frame(da.sel(rule=list(rules)))
    frame["rule"] = frame["rule"].astype(str)
    palette = {str(r): style.rule_color(str(r)) for r in rules}
    _lines(ax, frame, x_name(data), "rule", palette)
    named = style.names_layers(data["layer"].values)
    depth = float(data["depth"].sel(layer=layer))
    ax.set_title(str(layer) if named else f"depth {depth:.2f}")
    return _finish(ax, data, da)


def finite_rules(da: xr.DataArray, rules: Sequence[str] | None = None) -> list[str]:
    """The rules (default: all on the ``rule`` dim) with at least one finite value of ``da``."""
    rules = [str(r) for r in (da["rule"].values if rules is None else rules)]
    other = [d for d in da.dims if d != "rule"]
    finite = np.isfinite(da).any(other)
    return [r for r in rules if bool(finite.sel(rule=r))]


def finite_layers(da: xr.DataArray) -> list[str]:
    """The layers with at least one finite value of ``da``, in record order."""
    other = [d for d in da.dims if d != "layer"]
    finite = np.isfinite(da).any(other)
    return [str(la) for la in da["layer"].values if bool(finite.sel(layer=la))]
