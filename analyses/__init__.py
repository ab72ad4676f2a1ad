"""Analyses of recorded runs: pure functions from Datasets to Datasets/DataArrays.

They take numpy-backed Datasets or the lazy (dask-backed) ones :func:`alignment.open_runs`
returns, and return lazy results for lazy input (call ``.compute()`` on them: they are small);
the few that need values to decide (which options a rule has, which steps hold Jacobians) read
only those. No I/O and no plotting; options are keyword-only; ``long_name`` and ``units`` attrs
are kept or set so that figures label their axes from them; everything chains with ``.pipe``::

    from alignment import open_runs
    from alignment import analyses as an

    runs = open_runs("out/mnist_*/seed*")            # stacked along ``run``
    ds = runs.pipe(an.collapse_options)              # the grid rule × seed, one variant per rule
    table = an.accuracy_table(runs)                  # either form
    frame = an.tidy(runs, ["feedback_alignment"])    # long table for pandas/seaborn
    print(an.to_markdown(table))
    trajectories = ds.pipe(an.alignment_trajectories, how="first")

Public API, re-exported one by one:

* across runs: :func:`combine`, :func:`as_combined`, :func:`grid`, :func:`tidy`,
  :func:`split_runs`,
  :func:`collapse_options`, :func:`seed_statistics`, :func:`accuracy_table`,
  :func:`table_frame`, :func:`to_markdown`, :func:`to_csv`, :func:`to_latex`;
* trajectories: :func:`per_epoch`, :func:`alignment_trajectories`, :func:`with_depth`,
  :func:`relative_depth`, :func:`last_finite`;
* Fig. 3: :func:`expansion_study`, :func:`expansion_summary`, :data:`PAPER_K`;
* weight decay (alignment.theory, property 1): :func:`step_schedules`, :func:`predicted_decay`,
  :func:`decay_alignment`, :func:`run_config`, :func:`steps_per_epoch`;
* beyond the paper: :func:`grad_alignment_by_depth`, :func:`update_norm_ratio`,
  :func:`jacobian_alignment_distribution`, :func:`singular_value_spectra`,
  :func:`jacobian_steps`, :func:`final_per_sample` (per-sample quantities at each run's end,
  layers kept apart), :func:`informative_layers`, :func:`linear_cka`, :func:`cka_matrix`,
  :func:`trajectory_pca`;
* network dynamics (``record.dynamics``): :func:`cka_to_reference`, :func:`cka_across_layers`,
  :func:`effective_rank`, :func:`heavy_tail_exponent`, :func:`power_law_fit`,
  :func:`gradient_noise_summary`, :func:`final_gradient_noise`;
* rules (read from the rule classes' ``label``, ``color``, ``alignment_kind``):
  :data:`RULE_ORDER`, :func:`rule_label`, :func:`rule_color`, :func:`alignment_kind`,
  :func:`order_rules`, :func:`sorted_rules`.

Model-touching code (representations of the probe batch) lives apart, in
:mod:`alignment.analyses.representations`, and is not imported here (it needs torch models).
"""

from alignment.analyses._common import last_finite, relative_depth
from alignment.analyses.cka import cka_matrix, linear_cka
from alignment.analyses.decay import (
    decay_alignment,
    predicted_decay,
    run_config,
    step_schedules,
    steps_per_epoch,
)
from alignment.analyses.expansion import PAPER_K, expansion_study, expansion_summary
from alignment.analyses.gradient_noise import final_gradient_noise, gradient_noise_summary
from alignment.analyses.gradients import grad_alignment_by_depth, update_norm_ratio
from alignment.analyses.jacobians import (
    final_per_sample,
    informative_layers,
    jacobian_alignment_distribution,
    jacobian_steps,
    singular_value_spectra,
)
from alignment.analyses.pca import trajectory_pca
from alignment.analyses.representation_dynamics import (
    cka_across_layers,
    cka_to_reference,
    effective_rank,
)
from alignment.analyses.rules import (
    RULE_ORDER,
    alignment_kind,
    order_rules,
    rule_color,
    rule_label,
    sorted_rules,
)
from alignment.analyses.runs import (
    accuracy_table,
    as_combined,
    collapse_options,
    combine,
    seed_statistics,
    split_runs,
    table_frame,
    to_csv,
    to_latex,
    to_markdown,
)
from alignment.analyses.spectra import heavy_tail_exponent, power_law_fit
from alignment.analyses.trajectories import alignment_trajectories, per_epoch, with_depth
from alignment.recording.combine import grid, tidy

__all__ = [
    "PAPER_K",
    "RULE_ORDER",
    "accuracy_table",
    "alignment_kind",
    "alignment_trajectories",
    "as_combined",
    "cka_across_layers",
    "cka_matrix",
    "cka_to_reference",
    "collapse_options",
    "combine",
    "decay_alignment",
    "effective_rank",
    "expansion_study",
    "expansion_summary",
    "final_gradient_noise",
    "final_per_sample",
    "grad_alignment_by_depth",
    "gradient_noise_summary",
    "grid",
    "heavy_tail_exponent",
    "informative_layers",
    "jacobian_alignment_distribution",
    "jacobian_steps",
    "last_finite",
    "linear_cka",
    "order_rules",
    "per_epoch",
    "power_law_fit",
    "predicted_decay",
    "relative_depth",
    "rule_color",
    "rule_label",
    "run_config",
    "seed_statistics",
    "singular_value_spectra",
    "sorted_rules",
    "split_runs",
    "step_schedules",
    "steps_per_epoch",
    "table_frame",
    "tidy",
    "to_csv",
    "to_latex",
    "to_markdown",
    "trajectory_pca",
    "update_norm_ratio",
    "with_depth",
]
