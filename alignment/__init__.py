"""alignment: learning rules without weight symmetry, as PyTorch layers for any model.

Public API, re-exported one by one:

* :data:`RULES`, :func:`make_rule`: the learning-rule registry (bp, fa, dfa, usf, frsf, brsf,
  pfa, pfa_o, kp).
* :func:`convert`: any ``nn.Module`` under any rule.
* :class:`Linear`, :class:`Conv1d`, :class:`Conv2d`, :class:`Conv3d`: the converted layers
  (``feedback_matrix()``, ``B``, ``R``).
* :mod:`alignment.models`: the paper's networks.
"""

from alignment import models
from alignment.convert import UnconvertedLayerWarning, convert
from alignment.layers import Conv1d, Conv2d, Conv3d, FeedbackLayer, Linear
from alignment.recording import Recorder, open_run, open_runs, schedules
from alignment.rules import RULES, Rule, make_rule

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "FeedbackLayer",
    "Linear",
    "Recorder",
    "Rule",
    "UnconvertedLayerWarning",
    "__version__",
    "convert",
    "make_rule",
    "models",
    "open_run",
    "open_runs",
    "schedules",
]
