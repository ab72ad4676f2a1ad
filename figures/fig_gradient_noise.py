"""Gradient noise across samples (beyond the paper): how noisy is each rule's update from one
sample to the next?

(a) the gradient signal-to-noise ratio of each layer's per-sample rule updates on the probe batch
(``grad_snr``, as recorded) vs epoch (vs step for runs without epochs), one panel per rule, one
line per layer coloured by depth, mean ± sd band over seeds (seaborn); (b) at each run's last
probe record, the angle between each probe sample's rule update and the probe batch's BP
gradient, one box per layer and rule over samples and seeds (seaborn), every sample a dot. Needs
the runs to record ``grad_snr`` and ``sample_grad_angle`` (``record.dynamics:
[gradient_noise]``).

    python -m figures.fig_gradient_noise out/demo --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from alignment.analyses._common import labelled, select_variables
from alignment.analyses.gradient_noise import NOT_RECORDED, VARIABLES, final_gradient_noise
from alignment.analyses.rules import rule_label
from alignment.analyses.runs import collapse_options
from alignment.analyses.trajectories import per_epoch, with_depth
from alignment.figures import style
from alignment.figures._cli import run_figure
from alignment.figures.per_sample import panel_boxes
from alignment.figures.runinfo import layer_coords, seed_count
from alignment.figures.training import dense_runs, x_axis
from alignment.figures.trajectory_panels import finite_layers, finite_rules, layer_lines

NAME = "fig_gradient_noise"
DATA = "gradient_noise"
FINAL = "final_sample_grad_angle"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not (one line)."""
    if not any(n in ds and bool(np.isfinite(ds[n]).any()) for n in VARIABLES):
        return f"needs grad_snr or sample_grad_angle: {NOT_RECORDED}"
    return None


def figure_data(ds: xr.Dataset) -> xr.Dataset:
    """``grad_snr`` (rule, seed, epoch or step, layer; seeds kept for the sd bands) and
    ``final_sample_grad_angle`` (rule, seed, layer, sample) at each run's last probe record."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    source = collapse_options(dense_runs(select_variables(ds, list(VARIABLES))))
    x = x_axis(source)
    out = xr.Dataset()
    if "grad_snr" in source:
        snr = labelled(source["grad_snr"], "gradient SNR", "1")  # a short axis label
        out["grad_snr"] = per_epoch(snr) if x == "epoch" else snr
    if "sample_grad_angle" in source:
        final = final_gradient_noise(source)["sample_grad_angle"]
        out[FINAL] = labelled(
            final,
            "angle to BP gradient",
            "deg",
            "At each run's last probe record: " + final.attrs["description"],
        )
    out = out.drop_vars([n for n in ("run",) if n in out.coords])
    out.attrs = {"figure": DATA, "x": x, "seeds": seed_count(source)}
    if "sample" in out.dims:
        out.attrs["samples"] = int(out.sizes["sample"])
    out = layer_coords(source, with_depth(out)).compute()  # lazy runs are read here, reduced
    out.attrs["caption"] = caption(out)
    return out


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    x = data.attrs.get("x", "epoch")
    seeds = data.attrs.get("seeds", "1")
    parts = [f"Gradient noise across probe samples, {seeds} seed(s) per rule."]
    letters = iter("ab")
    if "grad_snr" in data:
        parts.append(
            f"({next(letters)}) Signal-to-noise ratio of each layer's per-sample rule updates on "
            f"the probe batch (per-sample updates through torch.func.vmap) vs "
            f"{'epoch (first probe record of each)' if x == 'epoch' else 'training step'}, one "
            "line per layer coloured by depth: mean over seeds, band = ±1 standard deviation "
            "over seeds (none for a single seed)."
        )
    if FINAL in data:
        parts.append(
            f"({next(letters)}) At each run's last probe record: the angle between each of the "
            f"{data.attrs.get('samples', '?')} probe samples' rule update and the probe batch's "
            "BP gradient; one box per layer and rule over samples and seeds (median, quartiles, "
            "whiskers at 1.5 IQR), every sample a dot."
        )
    return " ".join(parts)


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def panel_snr(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(a) Gradient SNR vs epoch for one rule, one line per layer, mean ± sd over seeds."""
    data = _prepared(ds)
    layer_lines(data, ax, "grad_snr", rule=rule)
    ax.set_ylim(bottom=0)
    return ax


def panel_angles(ds: xr.Dataset, ax: Axes) -> Axes:
    """(b) Per-sample angle to the BP gradient at the end: one box per layer and rule."""
    data = _prepared(ds)
    rules = finite_rules(data[FINAL])
    return panel_boxes(data, ax, FINAL, rules=rules, layers=finite_layers(data[FINAL]))


def make_figure(ds: xr.Dataset) -> Figure:
    """The gradient-noise figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    snr_rules = finite_rules(data["grad_snr"]) if "grad_snr" in data else []
    box_rules = finite_rules(data[FINAL]) if FINAL in data else []
    cell_w, cell_h = style.CELL["layer"]
    acc_w, acc_h = style.CELL["accuracy"]
    named = style.names_layers(data["layer"].values)
    n_layers = len(finite_layers(data[FINAL])) if box_rules else 0
    box_w = max(acc_w, 0.6 + 0.22 * max(n_layers, 1) * max(len(box_rules), 1))
    width = max(len(snr_rules) * cell_w + (2.4 if named else 0.9), box_w + 1.2)
    rows = ([cell_h + 0.25] if snr_rules else []) + ([acc_h + 0.25] if box_rules else [])
    letters = iter("ab")
    with style.style():
        fig = style.new_figure(width, sum(rows))
        parts = list(fig.subfigures(len(rows), 1, height_ratios=rows, squeeze=False)[:, 0])
        if snr_rules:
            part = parts.pop(0)
            axes = part.subplots(1, len(snr_rules), squeeze=False)[0]
            for rule, ax in zip(snr_rules, axes, strict=True):
                panel_snr(data, ax, rule=rule)
            style.layer_key(part, list(axes), data)
            style.panel_letter(part, next(letters), "gradient SNR across probe samples")
        if box_rules:
            part = parts.pop(0)
            left, right = part.subfigures(1, 2, width_ratios=[box_w, max(width - box_w, 0.01)])
            panel_angles(data, left.subplots())
            right.legend(
                [
                    Patch(facecolor=style.rule_color(r), edgecolor="0.2", linewidth=0.5)
                    for r in box_rules
                ],
                [rule_label(r) for r in box_rules],
                loc="center left",
                frameon=False,
                title="Rule",
            )
            style.panel_letter(left, next(letters), "per sample, end of training")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
