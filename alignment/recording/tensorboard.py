"""A sink that writes the records to TensorBoard event files, to watch runs while they train.

>>> sink = TensorBoardSink("runs/pfa-0/tensorboard")                      # doctest: +SKIP
>>> rec = Recorder(model, "runs/pfa-0", optimizer=opt, sinks=[sink])       # doctest: +SKIP

then ``tensorboard --logdir runs``. The trainer does this with ``record.tensorboard: true``
(event files in ``RUN/tensorboard/``, so ``tensorboard --logdir OUT`` shows a whole sweep).

What goes where (``step``: the record's training step; the zarr record holds the same values):

* network-level variables (``loss``, ``train_accuracy``, ``test_accuracy``, ``lr``,
  ``weight_decay``, ``record_seconds``, ``elapsed_seconds``, ``user_<name>``, …) are scalars
  under ``alignment/<variable>``;
* per-layer variables (``feedback_alignment``, ``feedback_norm_ratio``, ``grad_alignment``,
  ``feedback_residual``, ``*_predicted``, …) are scalars under ``alignment/<variable>/<layer>``;
* variables with a dim after ``layer`` (``delta_alignment`` and ``jacobian_alignment`` per
  probe sample, the Jacobians' singular values) are histograms under the same kind of tag.

Values a record did not measure (NaN) are not written. TensorBoard stores scalars as float32.
The event writer is opened at the first record with ``purge_step`` at its step, so a resumed
run hides what the interrupted process had written from that step on, as its zarr record does.

Needs the ``tensorboard`` extra: ``pip install "feedback-alignment[tensorboard]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignment.extras import needs_extra
from alignment.recording.sinks import Record

PREFIX = "alignment"
"""The first part of every tag."""



def summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; an ImportError naming the extra to install
    when the ``tensorboard`` package is missing."""
    with needs_extra("tensorboard", "TensorBoard logging"):
        import tensorboard  # noqa: F401  (the extra; torch's writer imports it too)
        from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter


class TensorBoardSink:
    """Writes each record to TensorBoard event files in ``log_dir`` (see the module docstring).

    Args:
        log_dir: the folder of the event files (created at the first record).
        prefix: the first part of every tag.
        flush_secs: how often the event writer writes to disk, at most (seconds).
    """

    def __init__(self, log_dir: str | Path, *, prefix: str = PREFIX, flush_secs: int = 10) -> None:
        self._writer_class = summary_writer_class()
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self.flush_secs = flush_secs
        self._writer: Any = None

    def __call__(self, record: Record) -> None:
        if self._writer is None:
            self._writer = self._writer_class(
                str(self.log_dir), purge_step=record.step, flush_secs=self.flush_secs
            )
        writer = self._writer
        for tag, value in record.scalars().items():
            writer.add_scalar(f"{self.prefix}/{tag}", value, record.step)
        for tag, values in record.distributions().items():
            writer.add_histogram(f"{self.prefix}/{tag}", values, record.step)

    def close(self) -> None:
        """Write what is pending and close the event file."""
        if self._writer is not None:
            self._writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardSink({str(self.log_dir)!r})"
