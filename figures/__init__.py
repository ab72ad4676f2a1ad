"""Publication figures: one module per figure, each with a pure ``make_figure(ds) -> Figure``,
axes-level ``panel_*(ds, ax)`` helpers that return the axes, a ``figure_data(ds)`` that computes
the Dataset the figure is drawn from (with :mod:`alignment.analyses`), and ``main(argv)`` that
saves PDF, PNG and SVG beside that Dataset (``.nc``) and its caption (``.md``; attr ``caption``
of the Dataset, set by ``figure_data``). ``figure_data`` takes the lazy runs of
:func:`alignment.open_runs` (trainer or own-loop runs) as well and returns its (small) Dataset
computed: only the variables the figure uses are read, reduced over seeds run by run.
``supports(ds)`` says in one line why a figure cannot be drawn from the runs (None if it can).

=====================  ==========================================================================
module                 figure
=====================  ==========================================================================
fig2_mnist             Fig. 2: MNIST — accuracy, alignment and norm ratio per layer vs epoch
fig4_cifar10           Fig. 4: the same for CIFAR-10 (ResNet-20)
fig5_imagenet          Fig. 5: the same for ImageNet (ResNet-18)
fig_training           the same for any other runs (another data set, own-loop runs)
fig3_expansion         Fig. 3: eigenvalues of B·Bᵀ and angle(W, B·Bᵀ·W) vs expansion ratio k
fig_sparse             sparse feedback: best test accuracy vs feedback density
fig_grad_alignment     gradient alignment with BP: heatmap rule × layer, trajectories ± sd (beyond)
fig_jacobian           per-sample Jacobian and δ alignment per layer (box plots), singular values
fig_decay              ‖R − BᵀW‖ against the predicted decay factor c_t (theory property 1)
fig_representations    CKA to BP per layer vs epoch, effective rank (record.dynamics)
fig_spectra            singular values of W and the feedback, heavy-tail exponent α (same)
fig_gradient_noise     gradient SNR per layer vs epoch, per-sample angles to BP (same)
=====================  ==========================================================================

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state); importing this
package selects the non-interactive Agg backend unless ``MPLBACKEND`` is set or pyplot is already
in use.
"""

from __future__ import annotations

import os
import sys

import matplotlib

if "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

__all__: list[str] = []
