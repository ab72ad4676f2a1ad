"""Fig. 5 (ImageNet ResNet-18): (a) test accuracy vs epoch, mean ± std over seeds; (b) alignment and
(c) norm ratio per layer vs epoch, one panel per rule, lines coloured by depth.

The layout is shared with the other training figures (:mod:`figures.training`)::

    python -m figures.fig5_imagenet out/imagenet_* --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import xarray as xr
from matplotlib.figure import Figure

from figures import training
from figures._cli import run_figure
from figures.training import figure_data, panel_accuracy, panel_alignment, panel_norm_ratio

NAME = "fig5_imagenet"
DATASETS = ("imagenet",)
TITLE = "ImageNet"

__all__ = [
    "NAME",
    "figure_data",
    "main",
    "make_figure",
    "panel_accuracy",
    "panel_alignment",
    "panel_norm_ratio",
    "supports",
]


def supports(ds: xr.Dataset) -> str | None:
    """None if the runs can draw this figure, else why not."""
    return training.supports(ds, datasets=DATASETS)


def make_figure(ds: xr.Dataset, *, title: str | None = TITLE) -> Figure:
    """Fig. 5 from runs (or from :func:`figure_data`)."""
    return training.make_figure(ds, title=title)


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
