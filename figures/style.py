"""The shared figure style: the paper's panel sizes and fonts, fixed rule colours, axis labels
from ``long_name``/``units``, depth colours, mean ± std bands, and saving.

The authors' plotting code (``plotting/utils.py`` of their repository) uses 8 pt Arial,
TrueType fonts in PDF (``pdf.fonttype`` 42), 2 × 1.5 in accuracy panels, 1 × 1 in alignment
panels and 1.5 × 1.5 in Fig. 3 panels. Arial is used where it is installed; otherwise the first
installed of Helvetica, Liberation Sans, DejaVu Sans (shipped with matplotlib), so no font
warning is ever emitted. Missing glyphs fall back to DejaVu Sans.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import xarray as xr
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from alignment.analyses.rules import rule_color as rules_color
from alignment.recording.open import netcdf_engine

FORMATS = ("pdf", "png", "svg")
SAVE_FORMATS = ("pdf", "png", "svg", "eps", "jpg", "tif")
"""What :func:`save` writes (the command line offers :data:`FORMATS`)."""

PANEL = {"accuracy": (2.0, 1.5), "layer": (1.0, 1.0), "expansion": (1.5, 1.5)}
"""Axes sizes (width, height) in inches, as in the paper's figures."""
CELL = {"accuracy": (2.7, 1.95), "layer": (1.5, 1.55), "expansion": (2.0, 1.9)}
"""Space per panel including its labels and ticks."""

FONT_SIZE = 8
PREFERRED_FONTS = ("Arial", "Helvetica", "Liberation Sans", "DejaVu Sans")

_EXTRA_COLORS = ("C9", *(mpl.colormaps["tab20b"](i) for i in range(20)))
"""Colours of rules whose class sets no ``color`` (picked by a hash of the name: stable)."""

DEPTH_CMAP = "viridis"
UNITS = {"1": "", "deg": "°", "%": "%", "nat": "nat", "1/deg": "1/°"}


def installed_fonts() -> list[str]:
    """The preferred sans-serif fonts that are installed, best first (DejaVu Sans at least)."""
    names = {font.name for font in font_manager.fontManager.ttflist}
    found = [name for name in PREFERRED_FONTS if name in names]
    return found or ["DejaVu Sans"]


def rc() -> dict[str, Any]:
    """rcParams of every figure."""
    fonts = installed_fonts()
    if "DejaVu Sans" not in fonts:
        fonts.append("DejaVu Sans")
    return {
        "font.family": "sans-serif",
        "font.sans-serif": fonts,
        "font.size": FONT_SIZE,
        "axes.titlesize": FONT_SIZE,
        "axes.labelsize": FONT_SIZE,
        "xtick.labelsize": FONT_SIZE - 1,
        "ytick.labelsize": FONT_SIZE - 1,
        "legend.fontsize": FONT_SIZE - 1,
        "figure.titlesize": FONT_SIZE + 1,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "lines.linewidth": 1.0,
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "svg.fonttype": "path",
        "savefig.dpi": 300,
        "figure.dpi": 100,
        "mathtext.default": "regular",
    }


mpl.rcParams["pdf.fonttype"] = 42
mpl.rcParams["ps.fonttype"] = 42


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Draw and save inside this context to get the paper's style."""
    with mpl.rc_context(rc()):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure (no pyplot state) of the given size in inches."""
    return Figure(figsize=(width, height), layout="constrained")


def rule_color(rule: str) -> Any:
    """The rule's fixed colour, the class attribute ``color`` of the rule
    (:data:`alignment.rules.RULES`: BP C0, FA C1, DFA C2, PFA C3, uSF C4, PFA-o C5, …); rules
    without one get a stable colour from their name."""
    color = rules_color(str(rule))
    if color:
        return color
    digest = int(hashlib.sha1(rule.encode()).hexdigest(), 16)
    return _EXTRA_COLORS[digest % len(_EXTRA_COLORS)]


def axis_label(attrs: Mapping[Any, Any] | xr.DataArray) -> str:
    """'Long name (units)' from the attrs; dimensionless ('1') quantities get no unit."""
    if isinstance(attrs, xr.DataArray):
        attrs = attrs.attrs
    name = str(attrs.get("long_name") or attrs.get("standard_name") or "")
    if not name:
        raise ValueError("axis_label: the variable has no long_name attr")
    if not re.match(r"^\w+\(", name):  # 'angle(W, …)' stays a function name
        name = name[0].upper() + name[1:]
    units = str(attrs.get("units", ""))
    unit = UNITS.get(units, units)
    return f"{name} ({unit})" if unit else name


def label_axes(
    ax: Axes, *, x: Mapping[Any, Any] | xr.DataArray, y: Mapping[Any, Any] | xr.DataArray
) -> Axes:
    """Label both axes from attrs."""
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    return ax


def depth_color(depth: float) -> Any:
    return mpl.colormaps[DEPTH_CMAP](float(depth))


def depth_colorbar(
    fig: Figure | SubFigure, axes: Sequence[Axes] | Axes, *, shrink: float = 0.9
) -> Any:
    """A colour bar for the depth colours (0 = first layer, 1 = classifier) beside ``axes``."""
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=DEPTH_CMAP)
    bar = fig.colorbar(mappable, ax=axes, ticks=[0.0, 0.5, 1.0], shrink=shrink, aspect=15)
    bar.set_label("Relative depth")
    return bar


def band(
    ax: Axes,
    x: np.ndarray,
    mean: np.ndarray,
    spread: np.ndarray | None,
    *,
    color: Any,
    label: str | None = None,
    alpha: float = 0.3,
    **line: Any,
) -> Line2D:
    """A line with a shaded band mean ± spread (no band where spread is NaN)."""
    x, mean = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
    (handle,) = ax.plot(x, mean, color=color, label=label, **line)
    if spread is not None:
        spread = np.asarray(spread, dtype=float)
        ok = np.isfinite(mean) & np.isfinite(spread)
        if ok.any():
            ax.fill_between(
                x, mean - spread, mean + spread, where=ok, color=color, alpha=alpha, linewidth=0
            )
    return handle


def log_y(ax: Axes) -> Axes:
    """Log y-axis whose labels stay readable: decades only, or three plain-number ticks when the
    data span less than a decade (minor ticks unlabelled)."""
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(NullFormatter())
    values = np.concatenate(
        [np.asarray(line.get_ydata(), dtype=float).ravel() for line in ax.get_lines()] or [[]]
    )
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() < 10:
        low, high = values.min(), values.max()
        nice = [m * 10.0**e for e in range(-12, 13) for m in (1, 2, 5)]
        ticks = [v for v in nice if low * 0.999 <= v <= high * 1.001]
        if len(ticks) < 2:  # within one 1-2-5 step: add the ends, rounded, where not too close
            for end in (float(f"{low:.2g}"), float(f"{high:.2g}")):
                if all(abs(np.log(end / tick)) > np.log(1.25) for tick in ticks):
                    ticks.append(end)
            ticks = (
                sorted(ticks)
                if len(ticks) > 1
                else sorted({float(f"{low:.2g}"), float(f"{high:.2g}")})
            )
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
    return ax


MAX_NAMED_LAYERS = 8
"""Nets with at most this many recorded layers show layer names; deeper ones relative depth."""


def names_layers(layers: Sequence[Any] | xr.DataArray) -> bool:
    """True if a net with these layers is small enough to show their names."""
    return 0 < len(layers) <= MAX_NAMED_LAYERS


def layer_label(data: xr.Dataset, layer: Any) -> str:
    """A layer's display name: its module name and, where recorded, its type and shape
    ('fc1 Linear 512→10', 'features.0 Conv2d 1→8 3×3')."""
    sel = {"layer": layer}
    parts = [str(layer)]
    if "layer_type" in data.coords and data["layer_type"].dims == ("layer",):
        parts.append(str(data["layer_type"].sel(sel).values))
    if {"layer_fan_in", "layer_fan_out"} <= set(data.coords) and data["layer_fan_in"].dims == (
        "layer",
    ):
        shape = f"{int(data['layer_fan_in'].sel(sel))}→{int(data['layer_fan_out'].sel(sel))}"
        kernel = data["layer_kernel_size"].sel(sel).values if "layer_kernel_size" in data else ""
        parts.append(f"{shape} {kernel}".strip())
    return " ".join(parts)


def layer_key(
    fig: Figure | SubFigure,
    axes: Sequence[Axes] | Axes,
    data: xr.Dataset,
    *,
    shrink: float = 0.9,
    layers: Sequence[Any] | None = None,
) -> Any:
    """What the depth colours mean: a legend of the layers drawn (default: all) for small nets,
    else a depth colour bar (0 = first layer, 1 = classifier), beside ``axes``."""
    if not names_layers(list(data["layer"].values)):
        return depth_colorbar(fig, axes, shrink=shrink)
    layers = list(data["layer"].values) if layers is None else list(layers)
    if not layers:
        return depth_colorbar(fig, axes, shrink=shrink)
    handles = [
        Line2D([], [], color=depth_color(float(data["depth"].sel(layer=layer))), linewidth=1.5)
        for layer in layers
    ]
    labels = [layer_label(data, layer) for layer in layers]
    return fig.legend(
        handles, labels, loc="outside right center", frameon=False, title="Layer", fontsize=6
    )


def panel_letter(fig: Figure | SubFigure, letter: str, text: str = "") -> None:
    """Bold panel letter (and a short caption) at the top left of a (sub)figure."""
    head = f"$\\bf{{{letter}}}$  " if letter else ""
    fig.suptitle(f"{head}{text}".rstrip(), x=0.0, ha="left", fontsize=FONT_SIZE + 1)


# ------------------------------------------------------------------------------ saving
def _netcdf_attr(value: Any) -> Any:
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
        return np.asarray(value)
    return json.dumps(value, default=str)


def netcdf_ready(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with attrs NetCDF can store (dicts, lists, bools and None as JSON text) and
    string-like coordinates as plain unicode."""
    out = ds.copy()
    out.attrs = {k: _netcdf_attr(v) for k, v in ds.attrs.items()}
    for name in list(out.variables):
        var = out[name]
        var.attrs = {k: _netcdf_attr(v) for k, v in var.attrs.items()}
        if var.dtype.kind in "OT":
            out[name] = var.astype(str)
    return out


def save(
    fig: Figure,
    data: xr.Dataset,
    out_dir: str | Path,
    stem: str,
    *,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Write ``stem.<format>`` for each format and ``stem.nc`` (the Dataset the figure was drawn
    from) into ``out_dir``, and, where the Dataset has a ``caption`` attr (every figure's
    ``figure_data`` sets one), ``stem.md`` with that caption; returns the paths written.
    NetCDF-4 via h5netcdf where h5py is installed, else NetCDF-3 via scipy
    (:func:`alignment.recording.open.netcdf_engine`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [f for f in formats if f not in SAVE_FORMATS]
    if unknown:
        raise ValueError(
            f"unknown figure format(s) {', '.join(unknown)}; use {', '.join(SAVE_FORMATS)}"
        )
    paths = []
    with style():
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            fig.savefig(path, format=fmt, metadata=_metadata(fmt))
            paths.append(path)
    path = out / f"{stem}.nc"
    netcdf_ready(data).to_netcdf(path, engine=netcdf_engine())
    paths.append(path)
    caption = str(data.attrs.get("caption", ""))
    if caption:
        path = out / f"{stem}.md"
        path.write_text(f"**{stem}**. {caption}\n", encoding="utf-8")
        paths.append(path)
    return paths


def _metadata(fmt: str) -> dict[str, Any] | None:
    """Reproducible files: no creation date in PDF/SVG."""
    if fmt == "pdf":
        return {"CreationDate": None, "ModDate": None}
    if fmt == "svg":
        return {"Date": None}
    return None
