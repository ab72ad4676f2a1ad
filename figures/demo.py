"""The figures of ``make demo``: Fig. 2-style panels of the demo runs (MNIST-5k), Fig. 3,
gradient alignment, Jacobians, the weight-decay identity and the network dynamics
(representations, spectra, gradient noise)."""

from __future__ import annotations

from pathlib import Path

from alignment.figures import fig3_expansion, style
from alignment.figures.build import build_figures
from alignment.recording import open_runs

DEMO_RULES = ("bp", "fa", "dfa", "usf", "pfa", "pfa_o")


def _seed_number(path: Path) -> tuple[int, str]:
    digits = path.name.removeprefix("seed")
    return (int(digits), "") if digits.isdigit() else (1 << 30, path.name)


def make_demo_figures(
    demo_out: Path,
    figures_dir: Path,
    *,
    draws: int = 100,
    formats: tuple[str, ...] = style.FORMATS,
) -> list[Path]:
    """Write the demo figures for the runs ``demo_out/<rule>/seed<N>`` (every seed) into
    ``figures_dir``:
    ``fig2_demo`` (accuracy, alignment, norm ratio), ``fig3_expansion`` (``draws`` Monte-Carlo
    draws per k), ``fig_grad_alignment_demo``, ``fig_jacobian_demo``, ``fig_decay_demo`` and, where
    the runs recorded ``record.dynamics``, ``fig_representations_demo``, ``fig_spectra_demo``,
    ``fig_gradient_noise_demo``, each as PDF/PNG/SVG + .nc + caption (.md); a figure the runs
    cannot draw is skipped with a printed line saying why. Rules without a finished or started
    run are left out; returns the paths written. Raises FileNotFoundError when there is no demo
    run at all."""
    runs = [
        run
        for rule in DEMO_RULES
        for run in sorted((Path(demo_out) / rule).glob("seed*"), key=_seed_number)
        if (run / "config.yaml").exists() or (run / "record.zarr").is_dir()
    ]
    if not runs:
        raise FileNotFoundError(f"no demo runs under {demo_out} (expected <rule>/seed<N>)")
    written, skipped = build_figures(
        open_runs(runs),
        figures_dir,
        formats=formats,
        suffix="_demo",
        only=(
            "fig2_mnist",
            "fig_grad_alignment",
            "fig_jacobian",
            "fig_decay",
            "fig_representations",
            "fig_spectra",
            "fig_gradient_noise",
        ),
    )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    paths = [path for stem_paths in written.values() for path in stem_paths]
    data = fig3_expansion.figure_data(draws=draws)
    paths += style.save(
        fig3_expansion.make_figure(data), data, figures_dir, "fig3_expansion", formats=formats
    )
    return paths
