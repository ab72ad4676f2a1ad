"""The training figure of :mod:`alignment.figures.training` for runs no paper figure is for: another
data set, or own-loop runs that name none (test accuracy where logged with ``rec.log``, else
that of the recorded batch; vs step for runs without epochs).

    python -m alignment.figures.fig_training RUNS... --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

from alignment.figures.training import (
    ANY_RUNS,
    figure_data,
    panel_accuracy,
    panel_alignment,
    panel_norm_ratio,
)

SPEC = ANY_RUNS
NAME, DATASETS, supports, make_figure = SPEC.name, SPEC.datasets, SPEC.supports, SPEC.make_figure
__all__ = ["NAME", "figure_data", "main", "make_figure", "panel_accuracy", "panel_alignment"]
__all__ += ["panel_norm_ratio", "supports"]


def main(argv: Sequence[str] | None = None) -> int:
    return SPEC.main(argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
