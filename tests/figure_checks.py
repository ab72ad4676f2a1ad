"""Checks every figure test applies: labelled axes, no overlapping or cut-off text, legends clear
of the axes (:func:`assert_tidy`), and every legend entry visible in the drawing
(:func:`assert_legends_visible`)."""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import Collection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text


def _drawn(fig: Figure) -> None:
    FigureCanvasAgg(fig).draw()


def _ticklabels(ax: Axes) -> list[Text]:
    out = []
    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        low, high = sorted(lim)
        pad = 1e-9 * max(abs(low), abs(high), 1e-300)  # relative: log axes reach 1e-10
        for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False):
            if label.get_visible() and label.get_text() and low - pad <= loc <= high + pad:
                out.append(label)
    return out


def _texts(fig: Figure) -> list[Text]:
    texts: list[Text] = []
    for ax in fig.get_axes():
        texts += _ticklabels(ax)
        texts += [ax.xaxis.label, ax.yaxis.label, ax.title, ax._left_title, ax._right_title]
        if ax.get_legend() is not None:
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    for sub in [fig, *fig.subfigs, *(s for f in fig.subfigs for s in f.subfigs)]:
        texts += [t for t in (sub._suptitle,) if t is not None]
        for legend in sub.legends:
            texts += [*legend.get_texts(), legend.get_title()]
    return [t for t in texts if t.get_visible() and t.get_text()]


def assert_tidy(fig: Figure) -> None:
    """Labelled axes, no overlapping text, legends clear of every axes."""
    _drawn(fig)
    renderer = fig.canvas.get_renderer()
    for ax in fig.get_axes():
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel() or ax.get_xlabel(), "colour bar without a label"
            continue
        assert ax.get_xlabel(), f"axes {ax.get_title()!r} has no x label"
        assert ax.get_ylabel(), f"axes {ax.get_title()!r} has no y label"
    boxes = [(t, t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in _texts(fig)]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"texts overlap: {a.get_text()!r} / {b.get_text()!r}"
    width, height = fig.canvas.get_width_height()
    for text, box in boxes:
        assert box.x0 >= -1 and box.y0 >= -1, f"{text.get_text()!r} is cut off"
        assert box.x1 <= width + 1 and box.y1 <= height + 1, f"{text.get_text()!r} is cut off"
    legends = [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    legends += [
        leg
        for f in [fig, *fig.subfigs, *(s for x in fig.subfigs for s in x.subfigs)]
        for leg in f.legends
    ]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.get_axes():
            assert not box.overlaps(ax.get_window_extent(renderer)), "a legend covers an axes"


# ------------------------------------------------------------------------------ legends
def _legends(fig: Figure) -> list[Legend]:
    subs = [fig, *fig.subfigs, *(s for f in fig.subfigs for s in f.subfigs)]
    found = [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    return found + [legend for sub in subs for legend in sub.legends]


def _rgba(color: object) -> tuple[float, ...] | None:
    try:
        return tuple(np.round(to_rgba(color), 3))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None


def _visible_alpha(artist: Artist) -> bool:
    alpha = artist.get_alpha()
    return artist.get_visible() and (alpha is None or alpha > 0)


def _in_view(ax: Axes, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        return np.zeros(0, dtype=bool)
    return np.isfinite(x) & np.isfinite(y) & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _line_key(line: Line2D) -> tuple:
    return (line.get_linestyle(), line.get_marker() if line.get_marker() != "None" else "")


def _drawn_lines(ax: Axes) -> list[Line2D]:
    """Lines in the axes that show at least one point inside the view and are not exactly
    covered by a later line (same data, drawn on top) of another colour."""
    lines = [ln for ln in ax.get_lines() if _visible_alpha(ln) and ln.get_label() != "_nolegend_"]
    out = []
    for i, line in enumerate(lines):
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        shown = _in_view(ax, x, y)
        if not shown.any():
            continue
        if line.get_linewidth() <= 0 and (line.get_marker() in ("None", "", None)):
            continue
        covered = any(
            _rgba(other.get_color()) != _rgba(line.get_color())
            and other.get_zorder() >= line.get_zorder()
            and np.array_equal(np.asarray(other.get_xdata(), dtype=float)[shown], x[shown])
            and np.array_equal(np.asarray(other.get_ydata(), dtype=float)[shown], y[shown])
            and other.get_linewidth() >= line.get_linewidth()
            for other in lines[i + 1 :]
            if len(other.get_xdata()) == len(x)
        )
        if not covered:
            out.append(line)
    return out


def _patch_colors(artist: Artist) -> list[tuple[float, ...]]:
    """Face colours of a patch or collection, or its edge colours where it is not filled."""
    if isinstance(artist, Patch):
        colors = [artist.get_facecolor()]
        if _rgba(colors[0]) is None or _rgba(colors[0])[3] == 0:  # type: ignore[index]
            colors = [artist.get_edgecolor()]
    elif isinstance(artist, Collection):
        colors = list(artist.get_facecolor()) or list(artist.get_edgecolor())
    else:
        return []
    return [c for c in (_rgba(c) for c in colors) if c is not None and c[3] > 0]


def _vertices(artist: Artist) -> np.ndarray | None:
    if not isinstance(artist, Patch):
        return None
    return np.round(artist.get_path().vertices, 9)


def _drawn_faces(ax: Axes) -> list[tuple[float, ...]]:
    """Colours of visible patches and collections with a non-empty extent in the axes that are
    not exactly covered by a later patch of another colour (same outline)."""
    faces = []
    renderer = ax.figure.canvas.get_renderer()
    artists = [a for a in [*ax.patches, *ax.collections] if _visible_alpha(a)]
    for i, artist in enumerate(artists):
        if isinstance(artist, Patch):
            box = artist.get_window_extent(renderer).intersection(
                artist.get_window_extent(renderer), ax.get_window_extent(renderer)
            )
            if box is None or box.width < 0.5 or box.height < 0.5:  # flat: a line at best
                continue
        elif isinstance(artist, Collection):
            offsets = np.asarray(artist.get_offsets(), dtype=float).reshape(-1, 2)
            if offsets.size and not _in_view(ax, offsets[:, 0], offsets[:, 1]).any():
                continue
        colors = _patch_colors(artist)
        outline = _vertices(artist)
        if outline is not None and any(
            (other_outline := _vertices(other)) is not None
            and other_outline.shape == outline.shape
            and np.array_equal(other_outline, outline)
            and _patch_colors(other) != colors
            for other in artists[i + 1 :]
        ):
            continue
        faces += colors
    return faces


def assert_legends_visible(fig: Figure) -> None:
    """Every legend entry has a visible handle (alpha > 0, a line width, marker or face) and is
    drawn in some axes: a line of its colour with a point inside the view and not exactly hidden
    under a later line of another colour, or a patch/collection of its face colour; a grey
    handle is a style key (solid vs dashed, markers) and matches a drawn line of its line style
    and marker. Colour-bar axes are not searched."""
    FigureCanvasAgg(fig).draw()
    axes = [ax for ax in fig.get_axes() if ax.get_label() != "<colorbar>"]
    lines = [line for ax in axes for line in _drawn_lines(ax)]
    faces = {face for ax in axes for face in _drawn_faces(ax)}
    for legend in _legends(fig):
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            label = text.get_text()
            assert handle is not None and _visible_alpha(handle), f"legend entry {label!r} hidden"
            if isinstance(handle, Line2D):
                color = _rgba(handle.get_color())
                assert handle.get_linewidth() > 0 or handle.get_marker() not in ("None", ""), label
                grey = (
                    color is not None
                    and color[0] == color[1] == color[2]
                    and color
                    != (
                        0.0,
                        0.0,
                        0.0,
                        1.0,
                    )
                )
                if grey:
                    found = any(_line_key(line) == _line_key(handle) for line in lines)
                else:
                    found = any(_rgba(line.get_color()) == color for line in lines) or any(
                        face[:3] == color[:3]
                        for face in faces  # type: ignore[index]
                    )
            elif isinstance(handle, Patch):
                color = _rgba(handle.get_facecolor())
                assert color is not None and color[3] > 0, f"legend entry {label!r} has no face"
                found = any(face[:3] == color[:3] for face in faces) or any(
                    _rgba(line.get_color())[:3] == color[:3]  # type: ignore[index]
                    for line in lines
                )
            else:
                found = True
            assert found, f"legend entry {label!r} is not visible in any axes"
