"""The training figure, shared by Fig. 2 (MNIST), Fig. 4 (CIFAR-10), Fig. 5 (ImageNet) and
``fig_training`` (any other runs, own-loop runs included): the paper's layout, one spec per
figure (:data:`PAPER_FIGURES`).

(a) accuracy vs epoch (vs step for runs without epochs), one line per rule, mean ± sd band over
seeds, the legend (with the final accuracy) outside the axes; (b) alignment vs epoch, one panel
per rule (FA, uSF, …: weight alignment; PFA, PFA-o: path alignment; DFA: feedback map vs mean
Jacobian), one line per layer coloured by depth, the theory's prediction for the feedback as
realised (``feedback_alignment_predicted``) dashed in the same colour; small nets name their
layers, deep nets show a depth colour bar; (c) norm ratio, same layout. Values are taken at the
first record of each epoch (the paper logs at epoch starts) and averaged over seeds.

The title is the data set the records name (a trainer config's ``data.name`` or a tag ``data``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from alignment.analyses._common import label_step_coords, labelled, run_dims, select_variables
from alignment.analyses.rules import alignment_kind, rule_label
from alignment.analyses.runs import as_combined, collapse_options, seed_statistics
from alignment.analyses.trajectories import per_epoch, with_depth
from alignment.figures import style
from alignment.figures.runinfo import dataset_names, dataset_title, layer_coords, seed_count

DATA = "training"
MNIST_LIKE = ("mnist", "mnist5k", "digits", "fashion_mnist")
VARIABLES = (
    "test_accuracy",
    "train_accuracy",
    "feedback_alignment",
    "feedback_norm_ratio",
    "feedback_alignment_predicted",
    "feedback_norm_ratio_predicted",
)


@dataclass(frozen=True)
class Spec:
    """A training figure: its name, the data sets it is for (empty: any the others are not for)
    and its paper label. Its methods are the figure interface of :mod:`alignment.figures.build`
    (``supports``, ``figure_data``, ``make_figure``) and the command line (``main``); the modules
    ``fig2_mnist``, ``fig4_cifar10``, ``fig5_imagenet`` and ``fig_training`` expose them."""

    name: str
    datasets: tuple[str, ...]
    paper: str = ""

    def supports(self, ds: xr.Dataset) -> str | None:
        """None if the runs can draw this figure, else why not (one line)."""
        return supports(ds, datasets=self.datasets)

    def figure_data(self, ds: xr.Dataset, **options) -> xr.Dataset:
        """:func:`figure_data` (the same for every training figure)."""
        return figure_data(ds, **options)

    def make_figure(self, ds: xr.Dataset, *, title: str | None = None) -> Figure:
        """The figure from runs (or from :func:`figure_data`); the title defaults to the data
        set."""
        return make_figure(ds, title=title)

    def main(self, argv: Sequence[str] | None = None, *, description: str | None = None) -> int:
        """``python -m alignment.figures.<name> RUNS... --out DIR``."""
        from alignment.figures._cli import run_figure

        return run_figure(
            argv,
            name=self.name,
            description=description,
            figure_data=figure_data,
            make_figure=make_figure,
        )


PAPER_FIGURES = (
    Spec("fig2_mnist", MNIST_LIKE, "Fig. 2"),
    Spec("fig4_cifar10", ("cifar10",), "Fig. 4"),
    Spec("fig5_imagenet", ("imagenet",), "Fig. 5"),
)
ANY_RUNS = Spec("fig_training", ())
"""Runs on any other data set, or on none named (own-loop runs)."""


def dense_runs(ds: xr.Dataset) -> xr.Dataset:
    """Only runs with full feedback (density 1, or rules without a density option)."""
    ds = as_combined(ds, keep=("density",))
    if "density" not in ds.dims:
        return ds
    keep = [i for i, v in enumerate(ds["density"].values) if np.isnan(v) or v == 1.0]
    if not keep:
        raise ValueError("no dense runs (density 1) among the given runs")
    out = ds.isel(density=keep)
    if out.sizes["density"] > 1:
        return out
    out = out.squeeze("density", drop=True)
    out.attrs["run_dims"] = json.dumps([d for d in run_dims(ds) if d != "density"])
    return out


def datasets_of(ds: xr.Dataset) -> list[str]:
    """The data set of every run, from the records
    (:func:`alignment.figures.runinfo.dataset_names`)."""
    return dataset_names(ds)


def supports(ds: xr.Dataset, *, datasets: Sequence[str]) -> str | None:
    """None if the runs can draw a training figure for ``datasets`` (empty: the figure for runs
    that no paper figure is for), else why not, in one line."""
    names = dataset_names(ds)
    paper = {n for spec in PAPER_FIGURES for n in spec.datasets}
    if datasets and "" in names:
        return (
            "the runs do not name their data set (trainer config data.name, or "
            "Recorder(tags={'data': ...})); fig_training draws them"
        )
    if datasets and not set(names) <= set(datasets):
        return f"the runs are on {', '.join(names)}, not {' or '.join(datasets)}"
    if not datasets and set(names) <= paper:
        owner = next(s.name for s in PAPER_FIGURES if set(names) <= set(s.datasets))
        return f"{owner} draws these runs ({', '.join(names)})"
    if not {"test_accuracy", "train_accuracy", "feedback_alignment"} & set(ds.data_vars):
        return "the runs record no accuracy and no feedback_alignment"
    try:
        dense_runs(ds)
    except ValueError as error:
        return str(error)
    return None


def x_axis(ds: xr.Dataset) -> str:
    """'epoch' for runs that span epochs, else 'step' (own-loop runs without steps_per_epoch)."""
    if "epoch" in ds.coords and np.nanmax(np.asarray(ds["epoch"].values, dtype=float)) >= 1:
        return "epoch"
    return "step"


def _accuracy(ds: xr.Dataset) -> str | None:
    for name in ("test_accuracy", "train_accuracy"):
        if name in ds and bool(ds[name].notnull().any()):
            return name
    return None


def figure_data(ds: xr.Dataset, *, how: str = "first", ddof: int = 1) -> xr.Dataset:
    """The figure's Dataset: the accuracy in % (``test_accuracy``; runs that log none:
    ``train_accuracy`` of the recorded batch), ``feedback_alignment``, ``feedback_norm_ratio`` and
    their predictions per epoch (per step for runs without epochs), each with a ``stat`` dim
    (mean, std, sem, n over seeds). Attr ``caption`` says what is drawn."""
    names = [n for n in VARIABLES if n in ds]
    source = collapse_options(dense_runs(select_variables(ds, names)))
    accuracy = _accuracy(source)
    names = [n for n in names if n in source and (n == accuracy or "accuracy" not in n)]
    if not names:
        raise ValueError("the runs record no accuracy and no feedback_alignment")
    x = x_axis(source)
    values = per_epoch(source[names], how=how) if x == "epoch" else source[names]  # type: ignore[arg-type]
    if accuracy:
        kind = "test accuracy" if accuracy == "test_accuracy" else "train accuracy (batch)"
        values[accuracy] = labelled(values[accuracy] * 100.0, kind, "%")
    out = label_step_coords(seed_statistics(values, ddof=ddof))
    names_ = dataset_names(ds)
    seeds = seed_count(source)
    out.attrs = {
        "figure": DATA,
        "datasets": ",".join(names_),
        "how": how,
        "x": x,
        "accuracy": accuracy or "",
        "seeds": seeds,
    }
    out = layer_coords(source, with_depth(out)).compute()  # lazy runs are read here, reduced
    out.attrs["caption"] = caption(out)
    return out


def caption(data: xr.Dataset) -> str:
    """What the figure shows, from its Dataset."""
    title = dataset_title([n for n in str(data.attrs.get("datasets", "")).split(",") if n])
    x = data.attrs.get("x", "epoch")
    at = "at the first record of each epoch" if x == "epoch" else "at every recorded step"
    accuracy = data.attrs.get("accuracy", "")
    what = {
        "test_accuracy": "test accuracy",
        "train_accuracy": "accuracy on the recorded training batch (the runs log no test accuracy)",
    }.get(accuracy, "")
    parts = [
        f"Training{' on ' + title if title else ''}, {data.attrs.get('seeds', '1')} seed(s) per "
        f"rule, values {at}.",
    ]
    if what:
        parts.append(
            f"(a) {what} per rule: line = mean over seeds, band = ±1 standard deviation over "
            "seeds (none for a single seed)."
        )
    if "feedback_alignment" in data:
        parts.append(
            "(b) alignment of each rule's feedback with the forward weights (weight alignment, "
            "PFA: path alignment B·R vs W, DFA: feedback map vs mean Jacobian) and (c) its norm "
            "ratio, one line per layer (mean over seeds), coloured by depth; dashed: the theory's "
            "prediction for the feedback as realised, where the rule has one."
        )
    return " ".join(parts)


def _prepared(ds: xr.Dataset) -> xr.Dataset:
    return ds if ds.attrs.get("figure") == DATA else figure_data(ds)


def _x(data: xr.Dataset) -> str:
    return str(data.attrs.get("x", "epoch"))


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
    name = data.attrs.get("accuracy") or "test_accuracy"
    acc = data[name].sel(rule=rule)
    ok = np.flatnonzero(np.isfinite(acc.sel(stat="mean").values))
    if not len(ok):
        return float("nan"), float("nan")
    last = acc.isel({_x(data): int(ok[-1])})
    return float(last.sel(stat="mean")), float(last.sel(stat="std"))


def _finite(x: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    ok = np.isfinite(arrays[0])
    return (x[ok], *(a[ok] for a in arrays))


def panel_accuracy(ds: xr.Dataset, ax: Axes, *, legend: bool = False) -> Axes:
    """(a) Accuracy vs epoch (or step), one line per rule, mean ± sd band over seeds."""
    data = _prepared(ds)
    name = data.attrs.get("accuracy") or "test_accuracy"
    x = _x(data)
    acc = data[name]
    for rule in data["rule"].values:
        series = acc.sel(rule=rule)
        xs, mean, std = _finite(
            data[x].values.astype(float),
            series.sel(stat="mean").values,
            series.sel(stat="std").values,
        )
        if not xs.size:
            continue
        style.band(
            ax,
            xs,
            mean,
            std,
            color=style.rule_color(str(rule)),
            label=rule_label(str(rule)),
            marker="o" if xs.size < 4 else None,
            markersize=2.5,
        )
    trained = acc.sel(stat="mean").where(data[x] >= 1)
    low = float((trained - acc.sel(stat="std").fillna(0)).min()) if trained.notnull().any() else 0
    ax.set_ylim((np.floor(low / 5) * 5 if low > 80 else 0.0), 100.0)
    ax.set_xlim(float(data[x].min()), float(data[x].max()))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    style.label_axes(ax, x=data[x], y=acc)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return ax


def _per_layer(data: xr.Dataset, ax: Axes, name: str, rule: str, long_name: str) -> Axes:
    x = _x(data)
    da = data[name].sel(rule=rule, stat="mean")
    predicted = data.get(f"{name}_predicted")
    for layer in da["layer"].values:
        color = style.depth_color(float(data["depth"].sel(layer=layer)))
        xs, ys = _finite(data[x].values.astype(float), da.sel(layer=layer).values)
        ax.plot(xs, ys, color=color, alpha=0.8, linewidth=0.8)
        if predicted is not None:
            px, py = _finite(
                data[x].values.astype(float),
                predicted.sel(rule=rule, stat="mean", layer=layer).values,
            )
            if px.size:
                ax.plot(px, py, color=color, linewidth=0.8, linestyle=(0, (2, 1.5)), alpha=0.9)
    ax.set_title(rule_label(rule), color=style.rule_color(rule))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    ax.set_xlim(float(data[x].min()), float(data[x].max()))
    style.label_axes(ax, x=data[x], y=labelled(da, long_name, da.attrs["units"]))
    return ax


def panel_alignment(ds: xr.Dataset, ax: Axes, *, rule: str) -> Axes:
    """(b) Alignment vs epoch for one rule, one line per layer coloured by depth; the
    prediction dashed."""
    data = _prepared(ds)
    _per_layer(data, ax, "feedback_alignment", rule, f"{alignment_kind(rule)} alignment")
    top = float(data["feedback_alignment"].sel(rule=rule, stat="mean").max())
    ax.set_ylim(-5.0, max(100.0, top + 5.0))
    if top <= 100:
        ax.set_yticks([0, 45, 90])
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
        handles.append(Line2D([], [], color=style.rule_color(str(rule)), linewidth=1.5))
        labels.append(f"{rule_label(str(rule))}  {mean:.2f}{spread} %")
    return handles, labels


def _has_prediction(data: xr.Dataset, rules: list[str]) -> bool:
    if "feedback_alignment_predicted" not in data:
        return False
    values = data["feedback_alignment_predicted"].sel(rule=rules, stat="mean")
    return bool(np.isfinite(values.values).any())


def make_figure(ds: xr.Dataset, *, title: str | None = None) -> Figure:
    """The three-row figure of Fig. 2/4/5 from runs (or from :func:`figure_data`); ``title``
    defaults to the data set the records name."""
    data = _prepared(ds)
    if title is None:
        title = dataset_title([n for n in str(data.attrs.get("datasets", "")).split(",") if n])
    rules = layer_rules(data)
    accuracy = bool(data.attrs.get("accuracy"))
    n = max(len(rules), 1)
    cell_w, cell_h = style.CELL["layer"]
    acc_w, acc_h = style.CELL["accuracy"]
    named = style.names_layers(data["layer"].values)
    width = max(acc_w + 2.2, n * cell_w + (2.2 if named else 0.8))
    rows = ([acc_h] if accuracy else []) + ([cell_h + 0.2] * 2 if rules else [])
    with style.style():
        fig = style.new_figure(width, sum(rows))
        parts = list(fig.subfigures(len(rows), 1, height_ratios=rows, squeeze=False)[:, 0])
        letters = iter("abc")
        if accuracy:
            top = parts.pop(0)
            top_left, top_right = top.subfigures(1, 2, width_ratios=[acc_w, width - acc_w])
            panel_accuracy(data, top_left.subplots())
            style.panel_letter(top_left, next(letters), title or "")
            handles, labels = _legend_labels(data)
            word = "test" if data.attrs.get("accuracy") == "test_accuracy" else "train (batch)"
            top_right.legend(
                handles, labels, loc="center left", frameon=False, title=f"Final {word} accuracy"
            )
        for part, panel in zip(parts, (panel_alignment, panel_norm_ratio), strict=False):
            axes = part.subplots(1, n, squeeze=False)[0]
            for rule, ax in zip(rules, axes, strict=True):
                panel(data, ax, rule=rule)
            style.layer_key(part, list(axes), data)
            letter = next(letters)
            if panel is panel_alignment and _has_prediction(data, rules):
                style.panel_letter(part, letter, "dashed: predicted")
            else:
                style.panel_letter(part, letter, title if not accuracy and letter == "a" else "")
    return fig
