"""Build every figure a set of runs supports (what ``alignment figures`` and ``reproduce`` do)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import xarray as xr

from alignment.figures import (
    fig2_mnist,
    fig4_cifar10,
    fig5_imagenet,
    fig_decay,
    fig_grad_alignment,
    fig_gradient_noise,
    fig_jacobian,
    fig_representations,
    fig_sparse,
    fig_spectra,
    fig_training,
    style,
)

RUN_FIGURES: dict[str, ModuleType] = {
    "fig2_mnist": fig2_mnist,
    "fig4_cifar10": fig4_cifar10,
    "fig5_imagenet": fig5_imagenet,
    "fig_training": fig_training,
    "fig_sparse": fig_sparse,
    "fig_grad_alignment": fig_grad_alignment,
    "fig_jacobian": fig_jacobian,
    "fig_decay": fig_decay,
    "fig_representations": fig_representations,
    "fig_spectra": fig_spectra,
    "fig_gradient_noise": fig_gradient_noise,
}
"""Figures drawn from recorded runs, by name; each module has supports, figure_data (which
sets the Dataset's ``caption`` attr), make_figure. Exactly one of the training figures (fig2,
fig4, fig5, fig_training) draws a given set of runs."""

NO_RUNS = {"fig3_expansion": "needs no runs: `alignment reproduce expansion` builds it"}


def build_figures(
    ds: xr.Dataset,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = style.FORMATS,
    suffix: str = "",
    only: Sequence[str] | None = None,
) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """Draw and save every figure in ``only`` (default: all of :data:`RUN_FIGURES`) that the
    runs ``ds`` support, as ``<name><suffix>.*`` in ``out_dir`` (no suffix where the name already
    ends with it: fig2_mnist stays fig2_mnist).

    Each figure is saved with its Dataset (``.nc``, attr ``caption``) and its caption (``.md``).
    Every figure either draws or says in one line why not. Returns (written: stem → paths,
    skipped: name → reason).
    """
    written: dict[str, list[Path]] = {}
    skipped: dict[str, str] = {}
    for name, module in RUN_FIGURES.items():
        if only is not None and name not in only:
            continue
        reason = module.supports(ds)
        if reason is None:
            try:
                data = module.figure_data(ds)
            except ValueError as error:
                reason = str(error)
        if reason is not None:
            skipped[name] = " ".join(str(reason).split())  # one line
            continue
        fig = module.make_figure(data)
        stem = name if name.endswith(suffix) else f"{name}{suffix}"
        written[stem] = style.save(fig, data, out_dir, stem, formats=formats)
    return written, skipped
