"""Jacobian and error alignment per probe sample (beyond the paper), at each run's last record
that has them.

(a) the angle between the true Jacobian of the logits w.r.t. a layer's output and the feedback
Jacobian the rule uses instead, one box per layer and rule over probe samples and seeds;
(b) the same for δ, the error the rule delivers to the layer, vs BP's; (c) singular values of the
true (solid) and feedback (dashed) Jacobians, one panel per rule, lines coloured by layer, log y.
Layers are kept apart; the output layer (0° for every rule by construction) and BP (0° by
definition) are not drawn.

    python -m alignment.figures.fig_jacobian out/mnist_* --out out/figures
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from alignment.analyses._common import select_variables
from alignment.analyses.jacobians import (
    final_per_sample,
    informative_layers,
    jacobian_steps,
    singular_value_spectra,
)
from alignment.analyses.rules import rule_label
from alignment.analyses.runs import collapse_options
from alignment.figures import style
from alignment.figures._cli import run_figure
from alignment.figures.per_sample import panel_boxes
from alignment.figures.runinfo import layer_coords, seed_count
from alignment.figures.training import dense_runs

NAME = "fig_jacobian"
DATA = "jacobian"
PER_SAMPLE = ("jacobian_alignment", "delta_alignment")


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not (one line)."""
    if not len(jacobian_steps(ds)):
        return (
            "needs jacobian_alignment, which the runs never recorded (trainer: record.jacobian "
            "is never; Recorder: jacobian_schedule, or 'jacobian_alignment' excluded)"
        )
    return None


def figure_data(ds: xr.Dataset, *, step: int | None = None) -> xr.Dataset:
    """Per-sample ``jacobian_alignment`` and ``delta_alignment`` (dims rule, seed, layer,
    sample: :func:`alignment.analyses.jacobians.final_per_sample`) and the singular-value spectra
    (mean over seeds: :func:`alignment.analyses.singular_value_spectra`) at each run's last
    Jacobian record (or at ``step``). Attr ``caption`` says what is drawn."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    names = [*PER_SAMPLE, "jacobian_sv_true", "jacobian_sv_fb"]
    source = collapse_options(dense_runs(select_variables(ds, names)))
    samples = final_per_sample(source, variables=PER_SAMPLE, step=step)
    steps = json.loads(samples.attrs["steps"])
    spectra = singular_value_spectra(source, step=steps["jacobian_alignment"])
    out = xr.merge(
        [samples, spectra], compat="equals", join="exact", combine_attrs="override"
    ).drop_vars("sv_ratio")
    out.attrs = {
        "figure": DATA,
        "step": steps["jacobian_alignment"],
        "steps": json.dumps(steps),
        "seeds": seed_count(source),
        "samples": int(source.sizes.get("sample", 0)),
    }
    out = layer_coords(source, out).compute()  # lazy runs (open_runs) are read here, reduced
    out.attrs["caption"] = caption(out)
    return out


def shown_layers(data: xr.Dataset) -> list[str]:
    """Layers whose Jacobian (or δ) alignment carries information (not 0° for every rule)."""
    found: set[str] = set()
    for name in PER_SAMPLE:
        if name in data:
            found |= set(informative_layers(data[name]))
    return [str(layer) for layer in data["layer"].values if str(layer) in found]


def _rules(data: xr.Dataset, name: str) -> list[str]:
    if name not in data:
        return []
    return [
        str(r)
        for r in data["rule"].values
        if r != "bp" and np.isfinite(data[name].sel(rule=r).values).any()
    ]


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    layers = shown_layers(data)
    hidden = [str(la) for la in data["layer"].values if str(la) not in layers]
    steps = json.loads(str(data.attrs.get("steps", "{}")))
    where = ", ".join(f"{n} at step {s}" for n, s in steps.items())
    text = (
        f"Per-sample alignment at the end of training ({where}; each run's last record with "
        f"the quantity), {data.attrs.get('samples', '?')} probe samples × "
        f"{data.attrs.get('seeds', '1')} seed(s) per rule, layers kept apart. (a) angle between "
        "the true Jacobian of the logits w.r.t. the layer's output and the feedback Jacobian "
        "the rule uses; (b) angle between the error δ the rule delivers to the layer and BP's. "
        "Boxes: median and quartiles over samples and seeds, whiskers 1.5 IQR; dots: every "
        "sample. "
        "(c) singular values of the true (solid) and feedback (dashed) Jacobians, mean over "
        "probe samples and seeds. BP is 0° by definition and not drawn"
    )
    if hidden:
        text += (
            f"; layers {', '.join(hidden)} read 0° for every rule (output layer) and are left out"
        )
    return text + "."


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def panel_jacobian(ds: xr.Dataset, ax: Axes) -> Axes:
    """(a) Jacobian alignment per sample: one box per layer and rule."""
    data = _prepared(ds)
    rules = _rules(data, "jacobian_alignment")
    return panel_boxes(data, ax, "jacobian_alignment", rules=rules, layers=shown_layers(data))


def panel_delta(ds: xr.Dataset, ax: Axes) -> Axes:
    """(b) δ alignment per sample: one box per layer and rule."""
    data = _prepared(ds)
    rules = _rules(data, "delta_alignment")
    return panel_boxes(data, ax, "delta_alignment", rules=rules, layers=shown_layers(data))


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
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    style.label_axes(ax, x=data["sv"], y={"long_name": "singular value", "units": "1"})
    return ax


def _spectrum_rules(data: xr.Dataset) -> list[str]:
    values = data["jacobian_sv_true"]
    return [
        r for r in _rules(data, "jacobian_sv_fb") if r != "bp" and (values.sel(rule=r) > 0).any()
    ]


def _box_legend(part: object, rules: list[str]) -> None:
    handles = [Patch(facecolor=style.rule_color(r), edgecolor="0.2", linewidth=0.5) for r in rules]
    part.legend(  # type: ignore[attr-defined]
        handles, [rule_label(r) for r in rules], loc="outside right center", frameon=False
    )


def make_figure(ds: xr.Dataset) -> Figure:
    """The Jacobian figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    spectra = _spectrum_rules(data)
    panels = [n for n in PER_SAMPLE if _rules(data, n)]
    box_rules = [r for r in data["rule"].values if any(r in _rules(data, n) for n in panels)]
    layers = shown_layers(data)
    cell_w, cell_h = style.CELL["layer"]
    acc_w, acc_h = style.CELL["accuracy"]
    box_w = max(acc_w, 0.5 + 0.22 * max(len(layers), 1) * max(len(box_rules), 1))
    width = max(len(panels) * box_w + 0.9, len(spectra) * cell_w + 2.0)
    rows = ([acc_h + 0.2] if panels and layers else []) + ([cell_h + 0.2] if spectra else [])
    with style.style():
        fig = style.new_figure(width, sum(rows) or acc_h)
        parts = list(
            fig.subfigures(max(len(rows), 1), 1, height_ratios=rows or None, squeeze=False)[:, 0]
        )
        letters = iter("abc")
        if panels and layers:
            top = parts.pop(0)
            axes = top.subplots(1, len(panels), squeeze=False)[0]
            for name, ax in zip(panels, axes, strict=True):
                (panel_jacobian if name == "jacobian_alignment" else panel_delta)(data, ax)
                ax.set_title(next(letters), loc="left", fontweight="bold")
            _box_legend(top, [str(r) for r in box_rules])
            style.panel_letter(top, "", "per probe sample, end of training")
        if spectra:
            part = parts.pop(0)
            axes = part.subplots(1, len(spectra), squeeze=False)[0]
            for rule, ax in zip(spectra, axes, strict=True):
                panel_spectrum(data, ax, rule=rule)
            style.layer_key(part, list(axes), data)
            part.legend(
                [Line2D([], [], color="0.3"), Line2D([], [], color="0.3", linestyle="--")],
                ["true Jacobian", "feedback Jacobian"],
                loc="outside upper right",
                ncols=2,
                frameon=False,
            )
            style.panel_letter(part, next(letters), "singular values")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
