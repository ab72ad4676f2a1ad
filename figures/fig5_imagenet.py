"""Fig. 5 (ImageNet, ResNet-18): the training figure of :mod:`figures.training`.

python -m figures.fig5_imagenet RUNS... --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

import xarray as xr
from matplotlib.figure import Figure

from figures import training
from figures._cli import run_figure
from figures.training import figure_data, panel_accuracy, panel_alignment, panel_norm_ratio

SPEC = training.PAPER_FIGURES[2]
NAME = SPEC.name
DATASETS = SPEC.datasets

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
    """None if the runs can draw this figure, else why not (one line)."""
    return training.supports(ds, datasets=DATASETS)


def make_figure(ds: xr.Dataset, *, title: str | None = None) -> Figure:
    """The figure from runs (or from :func:`figure_data`); the title defaults to the data set."""
    return training.make_figure(ds, title=title)


def main(argv: Sequence[str] | None = None) -> int:
    return run_figure(
        argv, name=NAME, description=__doc__, figure_data=figure_data, make_figure=make_figure
    )


if __name__ == "__main__":
    raise SystemExit(main())
