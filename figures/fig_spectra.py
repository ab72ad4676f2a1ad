"""Weight and feedback spectra over training (beyond the paper): how do the spectra of W and of
the feedback evolve, and does W's spectrum grow a heavy tail?

(a) singular values of W, largest first, at each run's first (dashed) and last (solid) spectra
record, one panel per rule, one line per layer coloured by depth, log–log, mean over seeds;
(b) the same for the effective feedback (FA: B; PFA: B·R; BP: W itself, not drawn), with, for
PFA, the singular values of B·(BᵀW) — the feedback at the weight-decay fixed point R = BᵀW
(arXiv 2405.20594, §3.1) — dotted; (c) the heavy-tail exponent α of W's empirical spectral
density (power-law fit, :func:`analyses.spectra.heavy_tail_exponent`) vs epoch, one panel per
layer with enough singular values, one line per rule, mean ± sd band over seeds. Needs the runs
to record ``weight_sv`` (``record.dynamics: [spectra]``).

    python -m figures.fig_spectra out/demo --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from alignment.analyses._common import last_finite, select_variables
from alignment.analyses.rules import rule_label
from alignment.analyses.runs import collapse_options
from alignment.analyses.spectra import MIN_EIGENVALUES, NOT_RECORDED, SPECTRA, heavy_tail_exponent
from alignment.analyses.trajectories import per_epoch, with_depth
from alignment.figures import style
from alignment.figures._cli import run_figure
from alignment.figures.runinfo import layer_coords, seed_count
from alignment.figures.training import dense_runs, x_axis
from alignment.figures.trajectory_panels import finite_layers, finite_rules, rule_lines

NAME = "fig_spectra"
DATA = "spectra"
START, END, TARGET = "--", "-", ":"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not (one line)."""
    if "weight_sv" not in ds or not bool(np.isfinite(ds["weight_sv"]).any()):
        return f"needs weight_sv: {NOT_RECORDED}"
    return None


def _first_finite(da: xr.DataArray) -> xr.DataArray:
    return last_finite(da.isel(step=slice(None, None, -1)))


def figure_data(ds: xr.Dataset) -> xr.Dataset:
    """``<spectrum>_start`` and ``<spectrum>_end`` (rule, layer, rank; mean over seeds) for
    ``weight_sv``, ``feedback_sv`` and ``feedback_target_sv``, at each run's first and last
    record that holds them; ``alpha`` (rule, seed, epoch or step, layer) from
    :func:`analyses.spectra.heavy_tail_exponent`, seeds kept for the sd bands."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    source = collapse_options(dense_runs(select_variables(ds, list(SPECTRA))))
    out = xr.Dataset()
    for name in SPECTRA:
        if name not in source:
            continue
        da = source[name]
        for when, pick in (("start", _first_finite), ("end", last_finite)):
            value = pick(da).mean("seed", skipna=True) if "seed" in da.dims else pick(da)
            description = f"{da.attrs['long_name']} at each run's {when}, mean over seeds."
            out[f"{name}_{when}"] = value.assign_attrs({**da.attrs, "description": description})
    x = x_axis(source)
    alpha = heavy_tail_exponent(source)["alpha"]
    out["alpha"] = per_epoch(alpha) if x == "epoch" else alpha
    out = out.drop_vars([n for n in ("run",) if n in out.coords])
    out.attrs = {"figure": DATA, "x": x, "seeds": seed_count(source)}
    out = layer_coords(source, with_depth(out)).compute()  # lazy runs are read here, reduced
    out.attrs["caption"] = caption(out)
    return out


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    x = data.attrs.get("x", "epoch")
    seeds = data.attrs.get("seeds", "1")
    parts = [
        f"Spectra over training, {seeds} seed(s) per rule. (a) Singular values of W, largest "
        "first, at each run's first (dashed) and last (solid) spectra record, mean over seeds, "
        "one line per layer coloured by depth."
    ]
    if _feedback_rules(data):
        parts.append(
            "(b) The same for the effective feedback the rule sends errors through (FA, DFA: B; "
            "PFA: B·R); dotted: B·(BᵀW), PFA's feedback at the weight-decay fixed point R = BᵀW "
            "(arXiv 2405.20594, §3.1), at the last record."
        )
    if _alpha_layers(data):
        letter = "c" if _feedback_rules(data) else "b"
        parts.append(
            f"({letter}) Heavy-tail exponent α of W's empirical spectral density (eigenvalues of "
            "WᵀW): a power law fitted to its tail by maximum likelihood, the tail's start chosen "
            "by the smallest Kolmogorov–Smirnov distance (Clauset et al. 2009), vs "
            f"{'epoch' if x == 'epoch' else 'training step'}; line = mean over seeds, band = ±1 "
            "standard deviation (none for a single seed). Layers with fewer than "
            f"{MIN_EIGENVALUES} singular values have no α."
        )
    return " ".join(parts)


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def _feedback_rules(data: xr.Dataset) -> list[str]:
    if "feedback_sv_end" not in data:
        return []
    return [r for r in finite_rules(data["feedback_sv_end"]) if r != "bp"]


def _alpha_layers(data: xr.Dataset) -> list[str]:
    return finite_layers(data["alpha"]) if "alpha" in data else []


def _spectrum(ax: Axes, data: xr.Dataset, name: str, rule: str, linestyle: str) -> None:
    if name not in data:
        return
    for layer in data["layer"].values:
        values = np.asarray(data[name].sel(rule=rule, layer=layer).values, dtype=float)
        ok = np.isfinite(values) & (values > 0)
        if not ok.any():
            continue
        color = style.depth_color(float(data["depth"].sel(layer=layer)))
        rank = np.arange(1, values.size + 1)
        ax.plot(rank[ok], values[ok], color=color, linestyle=linestyle, linewidth=0.8)


def _log_axes(ax: Axes, rule: str, ylabel: str) -> Axes:
    ax.set_xscale("log")
    style.log_y(ax)
    for axis in (ax.xaxis, ax.yaxis):  # no minor ticks: hundreds per axis cost seconds to lay out
        axis.set_minor_locator(NullLocator())
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    style.label_axes(
        ax,
        x={"long_name": "rank (largest first)", "units": "1"},
        y={"long_name": ylabel, "units": "1"},
    )
    return ax


def panel_weight_spectrum(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(a) Singular values of W at the first (dashed) and last (solid) record, per layer."""
    data = _prepared(ds)
    _spectrum(ax, data, "weight_sv_start", rule, START)
    _spectrum(ax, data, "weight_sv_end", rule, END)
    return _log_axes(ax, rule, "singular value")


def panel_feedback_spectrum(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(b) Singular values of the feedback at the first (dashed) and last (solid) record, and
    (PFA) of B·(BᵀW) at the last (dotted), per layer."""
    data = _prepared(ds)
    _spectrum(ax, data, "feedback_sv_start", rule, START)
    _spectrum(ax, data, "feedback_sv_end", rule, END)
    _spectrum(ax, data, "feedback_target_sv_end", rule, TARGET)
    return _log_axes(ax, rule, "singular value")


def panel_alpha(ds: xr.Dataset, ax: Axes, *, layer: str) -> Axes:
    """(c) α vs epoch for one layer, one line per rule, mean ± sd over seeds."""
    data = _prepared(ds)
    return rule_lines(data, ax, "alpha", layer=layer, rules=finite_rules(data["alpha"]))


def _has_target(data: xr.Dataset) -> bool:
    name = "feedback_target_sv_end"
    return name in data and bool(np.isfinite(data[name]).any())


def make_figure(ds: xr.Dataset) -> Figure:
    """The spectra figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    rules = finite_rules(data["weight_sv_end"])
    feedback = _feedback_rules(data)
    layers = _alpha_layers(data)
    cell_w, cell_h = style.CELL["layer"]
    named = style.names_layers(data["layer"].values)
    width = max(len(rules), len(feedback), len(layers), 2) * (cell_w + 0.1) + (
        2.4 if named else 0.9
    )
    rows = [cell_h + 0.3] * (1 + bool(feedback) + bool(layers))
    letters = iter("abc")
    style_key = [Line2D([], [], color="0.4", linestyle=START), Line2D([], [], color="0.4")]
    style_labels = ["first record", "last record"]
    with style.style():
        fig = style.new_figure(width, sum(rows))
        parts = list(fig.subfigures(len(rows), 1, squeeze=False)[:, 0])
        part = parts.pop(0)
        axes = part.subplots(1, len(rules), squeeze=False)[0]
        for rule, ax in zip(rules, axes, strict=True):
            panel_weight_spectrum(data, ax, rule=rule)
        style.layer_key(part, list(axes), data)
        part.legend(style_key, style_labels, loc="outside upper right", ncols=2, frameon=False)
        style.panel_letter(part, next(letters), "singular values of W")
        if feedback:
            part = parts.pop(0)
            axes = part.subplots(1, len(feedback), squeeze=False)[0]
            for rule, ax in zip(feedback, axes, strict=True):
                panel_feedback_spectrum(data, ax, rule=rule)
            style.layer_key(part, list(axes), data)
            keys, labels = list(style_key), list(style_labels)
            if _has_target(data):
                keys.append(Line2D([], [], color="0.4", linestyle=TARGET))
                labels.append("B·(BᵀW), last")
            part.legend(keys, labels, loc="outside upper right", ncols=3, frameon=False)
            style.panel_letter(part, next(letters), "singular values of the feedback")
        if layers:
            part = parts.pop(0)
            axes = part.subplots(1, len(layers), squeeze=False)[0]
            for layer, ax in zip(layers, axes, strict=True):
                panel_alpha(data, ax, layer=layer)
            shown = finite_rules(data["alpha"])
            part.legend(
                [Line2D([], [], color=style.rule_color(r), linewidth=1.5) for r in shown],
                [rule_label(r) for r in shown],
                loc="outside right center",
                frameon=False,
                title="Rule",
            )
            style.panel_letter(part, next(letters), "heavy-tail exponent α of W's spectrum")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
