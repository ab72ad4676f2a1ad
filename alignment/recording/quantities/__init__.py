"""The recorded quantities, one small module per family (names as in the schema).

* :mod:`.network`: loss, train_accuracy, lr, weight_decay (+ test/val scalars from the loop);
* :mod:`.feedback_alignment`: feedback_alignment, feedback_norm_ratio;
* :mod:`.predictions`: feedback_alignment_predicted, feedback_norm_ratio_predicted (the theory's
  values for the feedback as realised);
* :mod:`.gradients`: grad_alignment, grad_norm, grad_bp_norm;
* :mod:`.delta_alignment`: delta_alignment;
* :mod:`.feedback_residual`: feedback_residual, feedback_residual_rel (PFA, KP);
* :mod:`.jacobians`: jacobian_alignment, jacobian_sv_true, jacobian_sv_fb (Jacobian schedule);
* :mod:`.bbt_eigenvalues`: bbt_eigenvalues (once per run, PFA);
* opt-in network dynamics (probe schedule; ``Recorder(dynamics=...)``, families in
  :data:`~alignment.recording.schema.DYNAMICS`): :mod:`.representations` (activation),
  :mod:`.spectra` (weight_sv, feedback_sv, feedback_target_sv), :mod:`.gradient_noise`
  (grad_snr, sample_grad_angle);
* :mod:`.raw`: raw tensors of opted-in layers (raw schedule);
* :mod:`.layers`: the coordinates describing each layer (written once).
"""

from __future__ import annotations

from alignment.recording.quantities import (
    bbt_eigenvalues,
    delta_alignment,
    feedback_alignment,
    feedback_residual,
    gradient_noise,
    gradients,
    jacobians,
    network,
    predictions,
    raw,
    representations,
    spectra,
)
from alignment.recording.quantities.common import Quantity
from alignment.recording.schema import DYNAMICS

QUANTITIES: tuple[Quantity, ...] = (
    network.QUANTITY,
    feedback_alignment.QUANTITY,
    predictions.QUANTITY,
    gradients.QUANTITY,
    delta_alignment.QUANTITY,
    feedback_residual.QUANTITY,
    jacobians.QUANTITY,
    bbt_eigenvalues.QUANTITY,
    representations.QUANTITY,
    spectra.QUANTITY,
    gradient_noise.QUANTITY,
)
"""Every quantity, in the order the recorder computes them (``when`` says on which schedule)."""

SELECTABLE: tuple[str, ...] = tuple(name for q in QUANTITIES for name in q.variables)
"""The variable names ``Recorder(quantities=..., exclude=...)`` accepts."""

OPT_IN: frozenset[str] = frozenset(name for names in DYNAMICS.values() for name in names)
"""Variables a recorder computes only when asked for (``dynamics=`` or ``quantities=``)."""

__all__ = ["OPT_IN", "QUANTITIES", "SELECTABLE", "Quantity", "raw"]
