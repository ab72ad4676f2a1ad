"""Fig. 4 (CIFAR-10, ResNet-20): the training figure of :mod:`alignment.figures.training`.

python -m alignment.figures.fig4_cifar10 RUNS... --out out/figures
"""

from __future__ import annotations

from collections.abc import Sequence

from alignment.figures.training import (
    PAPER_FIGURES,
    figure_data,
    panel_accuracy,
    panel_alignment,
    panel_norm_ratio,
)

SPEC = PAPER_FIGURES[1]
NAME, DATASETS, supports, make_figure = SPEC.name, SPEC.datasets, SPEC.supports, SPEC.make_figure
__all__ = ["NAME", "figure_data", "main", "make_figure", "panel_accuracy", "panel_alignment"]
__all__ += ["panel_norm_ratio", "supports"]


def main(argv: Sequence[str] | None = None) -> int:
    return SPEC.main(argv, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
