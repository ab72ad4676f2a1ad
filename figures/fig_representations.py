"""Representations over training (beyond the paper): do FA and PFA layers learn BP-like
representations, and when?

(a) linear CKA between each layer's outputs on the probe batch and the same layer of the BP run
with the same seed, vs epoch (vs step for runs without epochs), one panel per rule, one line per
layer coloured by depth, mean ± sd band over seeds (seaborn); (b) the effective rank
(participation ratio) of each layer's representation, same layout, BP included. Needs the runs
to record ``activation`` (``record.dynamics: [representations]``); (a) needs the BP runs too.

    python -m figures.fig_representations out/demo --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from alignment.analyses._common import select_variables
from alignment.analyses.representation_dynamics import (
    ACTIVATION,
    NOT_RECORDED,
    cka_to_reference,
    effective_rank,
)
from alignment.analyses.runs import collapse_options
from alignment.analyses.trajectories import per_epoch, with_depth
from alignment.figures import style
from alignment.figures._cli import run_figure
from alignment.figures.runinfo import layer_coords, seed_count
from alignment.figures.training import dense_runs, x_axis
from alignment.figures.trajectory_panels import finite_rules, layer_lines

NAME = "fig_representations"
DATA = "representations"
CKA = "cka_to_bp"


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not (one line)."""
    if ACTIVATION not in ds or not bool(np.isfinite(ds[ACTIVATION]).any()):
        return f"needs activation: {NOT_RECORDED}"
    return None


def figure_data(ds: xr.Dataset) -> xr.Dataset:
    """``cka_to_bp`` (rule, seed, epoch or step, layer; where the runs include BP) and
    ``effective_rank`` (same dims), per epoch (the first probe record of each) or per recorded
    step, seeds kept for the sd bands. Attr ``caption`` says what is drawn."""
    reason = supports(ds)
    if reason:
        raise ValueError(f"{NAME}: {reason}")
    source = collapse_options(dense_runs(select_variables(ds, [ACTIVATION, "probe_input"])))
    out = effective_rank(source)
    has_bp = "bp" in [str(r) for r in source["rule"].values]
    if has_bp:
        out[CKA] = cka_to_reference(source, reference="bp")[CKA]
    x = x_axis(source)
    if x == "epoch":
        out = per_epoch(out)
    out = out.drop_vars([n for n in ("run",) if n in out.coords])
    out.attrs = {"figure": DATA, "x": x, "seeds": seed_count(source), "bp": int(has_bp)}
    out.attrs["samples"] = int(source.sizes["sample"])
    out = layer_coords(source, with_depth(out)).compute()  # lazy runs are read here, reduced
    out.attrs["caption"] = caption(out)
    return out


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    x = data.attrs.get("x", "epoch")
    when = "epoch (first probe record of each)" if x == "epoch" else "training step"
    samples = "the fixed probe batch"
    parts = [
        f"Representations over training, {data.attrs.get('seeds', '1')} seed(s) per rule; "
        f"each layer's output on {samples}, vs {when}; one line per layer coloured by depth: "
        "mean over seeds, band = ±1 standard deviation over seeds (none for a single seed)."
    ]
    if CKA in data:
        parts.append(
            "(a) Linear CKA (Kornblith et al., 2019) between the layer's outputs and those of "
            "the same layer in the BP run with the same seed and probe batch, at the same step: "
            "1 = BP's representation up to rotation and scale. With few probe samples "
            f"({data.attrs.get('samples', '?')} here) and wide layers, linear CKA is biased "
            "towards 1 even for unrelated representations; analyses.cka_to_reference("
            "debiased=True) removes that bias."
        )
    parts.append(
        f"({'b' if CKA in data else 'a'}) Effective rank: participation ratio (Σλ)²/Σλ² of the "
        "eigenvalues of the covariance of the layer's outputs over the probe samples."
    )
    if CKA not in data:
        parts.append("No CKA to BP: the runs include no BP run.")
    return " ".join(parts)


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def panel_cka(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(a) CKA to BP vs epoch for one rule, one line per layer, mean ± sd over seeds."""
    data = _prepared(ds)
    layer_lines(data, ax, CKA, rule=rule)
    ax.set_ylim(-0.03, 1.03)
    ax.set_yticks([0, 0.5, 1])
    return ax


def panel_effective_rank(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(b) Effective rank vs epoch for one rule, one line per layer, mean ± sd over seeds."""
    data = _prepared(ds)
    layer_lines(data, ax, "effective_rank", rule=rule)
    ax.set_ylim(bottom=0)
    return ax


def make_figure(ds: xr.Dataset) -> Figure:
    """The representations figure from runs (or from :func:`figure_data`)."""
    data = _prepared(ds)
    cka_rules = [r for r in finite_rules(data[CKA]) if r != "bp"] if CKA in data else []
    rank_rules = finite_rules(data["effective_rank"])
    cell_w, cell_h = style.CELL["layer"]
    named = style.names_layers(data["layer"].values)
    n = max(len(cka_rules), len(rank_rules), 1)
    width = n * cell_w + (2.4 if named else 0.9)
    rows = [cell_h + 0.25] * ((1 if cka_rules else 0) + 1)
    with style.style():
        fig = style.new_figure(width, sum(rows))
        parts = list(fig.subfigures(len(rows), 1, squeeze=False)[:, 0])
        letters = iter("ab")
        if cka_rules:
            part = parts.pop(0)
            axes = part.subplots(1, len(cka_rules), squeeze=False)[0]
            for rule, ax in zip(cka_rules, axes, strict=True):
                panel_cka(data, ax, rule=rule)
            style.layer_key(part, list(axes), data)
            style.panel_letter(part, next(letters), "CKA to BP (same seed, same probe)")
        part = parts.pop(0)
        axes = part.subplots(1, len(rank_rules), squeeze=False)[0]
        for rule, ax in zip(rank_rules, axes, strict=True):
            panel_effective_rank(data, ax, rule=rule)
        style.layer_key(part, list(axes), data)
        style.panel_letter(part, next(letters), "effective rank (participation ratio)")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
