"""Per-sample distributions drawn with seaborn: one box per layer and rule, from a long table
(:func:`alignment.recording.tidy`-style) of a per-sample quantity with dims (rule, seed, layer,
sample)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes

from alignment.analyses.rules import rule_label
from alignment.figures import style


def layer_ticks(data: xr.Dataset, layers: Sequence[str]) -> list[str]:
    """Tick labels: layer names for small nets, relative depth for deep ones."""
    if style.names_layers(data["layer"].values):
        return [str(layer) for layer in layers]
    return [f"{float(data['depth'].sel(layer=layer)):.2f}" for layer in layers]


def long_table(da: xr.DataArray, rules: Sequence[str], layers: Sequence[str]) -> pd.DataFrame:
    """One row per rule, seed, layer and sample with a finite value: columns rule (label),
    layer, value."""
    sub = da.sel(rule=list(rules), layer=list(layers))
    frame = sub.rename("value").to_dataframe().reset_index()
    frame = frame[np.isfinite(frame["value"])]
    frame["rule"] = frame["rule"].map(lambda r: rule_label(str(r)))
    return frame[["rule", "layer", "value"]]


def panel_boxes(
    data: xr.Dataset,
    ax: Axes,
    name: str,
    *,
    rules: Sequence[str],
    layers: Sequence[str],
) -> Axes:
    """Box plots of ``data[name]`` over samples and seeds: x = layer, hue = rule (its colour),
    whiskers at 1.5 IQR, every sample as a small dot on top (so that a rule whose angles are all
    ≈ 0°, PFA-o's, still shows); the y-axis ends just above the largest value."""
    da = data[name]
    frame = long_table(da, rules, layers)
    labels = [rule_label(r) for r in rules]
    with warnings.catch_warnings():
        # seaborn 0.13.2 passes matplotlib's deprecated ``vert=`` to ``Axes.bxp`` (matplotlib
        # ≥ 3.11 warns); the boxes are the same
        warnings.filterwarnings("ignore", message=r"vert: bool", category=DeprecationWarning)
        _boxplot(frame, ax, layers, labels, rules)
    ax.set_xticks(range(len(layers)), layer_ticks(data, layers))
    top = float(np.nanmax(frame["value"].to_numpy())) if len(frame) else 90.0
    high = min(180.0, max(10.0, np.ceil(1.08 * top / 10.0) * 10.0))
    ax.set_ylim(-0.03 * high, high)
    named = style.names_layers(data["layer"].values)
    style.label_axes(
        ax,
        x={"long_name": "layer" if named else "relative depth", "units": "1"},
        y=da,
    )
    if named and max((len(str(la)) for la in layers), default=0) > 5:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    return ax


def _boxplot(
    frame: pd.DataFrame, ax: Axes, layers: Sequence[str], labels: list[str], rules: Sequence[str]
) -> None:
    """A box per layer and rule, with every sample drawn as a dot over it."""
    common = {
        "x": "layer",
        "y": "value",
        "hue": "rule",
        "order": list(layers),
        "hue_order": labels,
        "palette": {rule_label(r): style.rule_color(r) for r in rules},
        "ax": ax,
        "legend": False,
    }
    sns.boxplot(frame, **common, linewidth=0.6, fliersize=0.0, width=0.8, saturation=1.0)
    with _seeded_jitter():
        sns.stripplot(
            frame,
            **common,
            dodge=True,
            size=1.6,
            jitter=0.25,
            edgecolor="0.15",
            linewidth=0.3,
            zorder=3,
        )


@contextlib.contextmanager
def _seeded_jitter(seed: int = 0) -> Iterator[None]:
    """seaborn jitters strip plots with numpy's global random state: draw it from a fixed seed,
    so the same data give the same picture, and leave the caller's state as it was."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
