"""Jacobian alignment (beyond the paper): per probe sample, the angle between the true Jacobian
of the logits w.r.t. a layer's output and the feedback Jacobian the rule uses instead, at the
last Jacobian record.

(a) median over probe samples (and seeds) vs relative depth, interquartile band, per rule;
(b) the distribution over samples and layers, per rule; (c) singular values of the true (solid)
and feedback (dashed) Jacobians, one panel per rule, lines coloured by depth, log y.

    python -m figures.fig_jacobian out/mnist_* --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analyses._common import select_variables
from analyses.jacobians import (
    jacobian_alignment_distribution,
    jacobian_steps,
    singular_value_spectra,
)
from analyses.rules import rule_label
from analyses.runs import collapse_options
from figures import style
from figures._cli import run_figure
from figures.training import dense_runs

NAME = "fig_jacobian"
DATA = "jacobian"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not."""
    if not len(jacobian_steps(ds)):
        return "no Jacobians recorded (record.jacobian: never)"
    return None


def figure_data(ds: xr.Dataset, *, step: int | None = None, bins: int = 36) -> xr.Dataset:
    """Distribution (:func:`analyses.jacobian_alignment_distribution`) and spectra
    (:func:`analyses.singular_value_spectra`) at ``step`` (default: the last Jacobian step)."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    names = ["jacobian_alignment", "jacobian_sv_true", "jacobian_sv_fb"]
    ds = collapse_options(dense_runs(select_variables(ds, names)))
    distribution = jacobian_alignment_distribution(ds, step=step, bins=bins)
    spectra = singular_value_spectra(ds, step=distribution.attrs["step"])
    out = xr.merge([distribution, spectra], compat="equals", join="exact", combine_attrs="override")
    out.attrs = {"figure": DATA, "step": distribution.attrs["step"]}
    return out.compute()  # lazy runs (open_runs) are read here, reduced


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def _rules(data: xr.Dataset, name: str) -> list[str]:
    return [str(r) for r in data["rule"].values if np.isfinite(data[name].sel(rule=r).values).any()]


def panel_depth(ds: xr.Dataset, ax: Axes) -> Axes:
    """(a) Median Jacobian alignment vs relative depth, interquartile band, one line per rule."""
    data = _prepared(ds)
    q = data["angle_quantile"]
    for rule in _rules(data, "angle_quantile"):
        low, mid, high = (q.sel(rule=rule, quantile=p).values for p in (0.25, 0.5, 0.75))
        color = style.rule_color(rule)
        ax.plot(data["depth"], mid, color=color, marker="o", markersize=2.5, label=rule_label(rule))
        ax.fill_between(data["depth"], low, high, color=color, alpha=0.3, linewidth=0)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-5.0, 95.0 if float(q.max()) <= 90 else 185.0)
    style.label_axes(ax, x=data["depth"], y=q)
    return ax


def panel_distribution(ds: xr.Dataset, ax: Axes) -> Axes:
    """(b) Distribution of the Jacobian alignment over samples and layers, one line per rule."""
    data = _prepared(ds)
    pooled = data["pooled"]
    width = float(np.diff(data["angle"].values[:2])[0]) if data.sizes["angle"] > 1 else 180.0
    for rule in _rules(data, "pooled"):
        ax.stairs(
            pooled.sel(rule=rule).values,
            np.append(data["angle"].values - width / 2, data["angle"].values[-1] + width / 2),
            color=style.rule_color(rule),
            label=rule_label(rule),
        )
    ax.set_xlim(0.0, 180.0 if float(data["angle_quantile"].max()) > 90 else 90.0)
    style.label_axes(ax, x=data["angle"], y=pooled)
    return ax


def panel_spectrum(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(c) Singular values of the true (solid) and feedback (dashed) Jacobians of every layer."""
    data = _prepared(ds)
    for layer in data["layer"].values:
        color = style.depth_color(float(data["depth"].sel(layer=layer)))
        true = data["jacobian_sv_true"].sel(rule=rule, layer=layer)
        fb = data["jacobian_sv_fb"].sel(rule=rule, layer=layer)
        ax.plot(data["sv"], true.where(true > 0), color=color, linewidth=0.8)
        ax.plot(data["sv"], fb.where(fb > 0), color=color, linewidth=0.8, linestyle="--")
    style.log_y(ax)
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    style.label_axes(ax, x=data["sv"], y={"long_name": "singular value", "units": "1"})
    return ax


def _spectrum_rules(data: xr.Dataset) -> list[str]:
    values = data["jacobian_sv_true"]
    return [
        r for r in _rules(data, "jacobian_sv_fb") if r != "bp" and (values.sel(rule=r) > 0).any()
    ]


def make_figure(ds: xr.Dataset) -> Figure:
    """The Jacobian figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    rules = _spectrum_rules(data)
    cell_w, cell_h = style.CELL["layer"]
    acc_w, acc_h = style.CELL["accuracy"]
    width = max(2 * acc_w + 0.8, len(rules) * cell_w + 0.8)
    with style.style():
        fig = style.new_figure(width, acc_h + (cell_h + 0.2 if rules else 0))
        parts = fig.subfigures(
            2 if rules else 1,
            1,
            height_ratios=[acc_h, cell_h + 0.2] if rules else None,
            squeeze=False,
        )[:, 0]
        a, b = parts[0].subfigures(1, 2, width_ratios=[acc_w, width - acc_w])
        panel_depth(data, a.subplots())
        style.panel_letter(a, "a", f"at step {data.attrs['step']}")
        ax = b.subplots()
        panel_distribution(data, ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        style.panel_letter(b, "b")
        if rules:
            axes = parts[1].subplots(1, len(rules), squeeze=False)[0]
            for rule, ax in zip(rules, axes, strict=True):
                panel_spectrum(data, ax, rule=rule)
            style.depth_colorbar(parts[1], list(axes))
            parts[1].legend(
                [Line2D([], [], color="0.3"), Line2D([], [], color="0.3", linestyle="--")],
                ["true Jacobian", "feedback Jacobian"],
                loc="outside upper right",
                ncols=2,
                frameon=False,
            )
            style.panel_letter(parts[1], "c")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
