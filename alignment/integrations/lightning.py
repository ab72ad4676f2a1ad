"""Record alignment in PyTorch Lightning: :class:`AlignmentCallback`, a Lightning ``Callback``
around :class:`alignment.Recorder`.

>>> callback = AlignmentCallback("runs/pfa-0")                     # doctest: +SKIP
>>> trainer = L.Trainer(max_epochs=40, callbacks=[callback])        # doctest: +SKIP
>>> trainer.fit(module, train_loader, val_loader)                   # doctest: +SKIP

The callback gives the recorder what a plain loop would (the README's "Watching a run" has a
complete example):

* the model: the module's ``model`` attribute when it is an ``nn.Module`` (a LightningModule
  that wraps a converted network), else the LightningModule itself; ``model=`` picks another
  (an attribute name or a function of the LightningModule). It maps inputs to logits.
* the loss: the module's ``loss_fn`` or ``criterion`` (``loss(logits, y)``), else cross-entropy;
* the optimizer: the trainer's first optimizer (lr, weight decay and the decay factor c_t);
* the batches: ``on_train_batch_start`` calls ``Recorder.step(x, y, step=global_step,
  epoch=current_epoch)`` before each training step's forward, ``x, y = batch[0], batch[1]``
  (``batch=`` picks them otherwise); with gradient accumulation the first micro-batch of each
  optimizer step is recorded;
* steps per epoch: the trainer's number of training batches (for the default schedules);
* test accuracy: after each validation run (not the sanity check), the metrics the module
  logged (``trainer.callback_metrics``) named ``test_accuracy`` or ``test_acc``, ``test_loss``,
  ``val_accuracy`` or ``val_acc``, ``val_loss`` are logged with ``Recorder.log`` at the current
  step (``metrics=`` maps other names). Accuracies are fractions, as the module logs them.

The recorder closes at ``on_fit_end`` (recording the final weights), or without the final
record when fitting raises. Its state is saved in Lightning's checkpoints, so
``trainer.fit(..., ckpt_path=...)`` continues the record as ``Recorder(resume=True)`` does.
Under several processes (DDP) global rank 0 records its share of each batch.

Needs the ``lightning`` extra: ``pip install "feedback-alignment[lightning]"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from alignment.extras import needs_extra
from alignment.recording.recorder import Recorder

with needs_extra("lightning", "alignment.integrations.lightning"):
    import lightning.pytorch as pl

METRICS: dict[str, tuple[str, ...]] = {
    "test_accuracy": ("test_accuracy", "test_acc"),
    "test_loss": ("test_loss",),
    "val_accuracy": ("val_accuracy", "val_acc"),
    "val_loss": ("val_loss",),
}
"""Recorder variable → the names under which a LightningModule may log it (the first found)."""


class AlignmentCallback(pl.Callback):
    """Records the alignment quantities of a LightningModule's converted model into ``run_dir``.

    Args:
        run_dir: the run directory (``run_dir/record.zarr``), as for :class:`Recorder`.
        model: the network to record: ``None`` (the module's ``model`` attribute if it is an
            ``nn.Module``, else the LightningModule), an attribute name, a function
            ``pl_module -> nn.Module`` or the ``nn.Module`` itself.
        loss_fn: ``loss(logits, y)``; default: the module's ``loss_fn`` or ``criterion``
            attribute, else ``F.cross_entropy``.
        batch: ``batch -> (x, y)``; default ``(batch[0], batch[1])``.
        metrics: recorder variable (``test_accuracy``, ``test_loss``, ``val_accuracy``,
            ``val_loss``) → the logged metric name(s) to take it from; default :data:`METRICS`.
        **recorder_options: passed to :class:`Recorder` (``probe``, ``schedule``, ``seed``,
            ``tags``, ``sinks``, ``steps_per_epoch``, …).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        model: str | Callable[[pl.LightningModule], nn.Module] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        batch: Callable[[Any], tuple[Tensor, Tensor]] | None = None,
        metrics: Mapping[str, str | Sequence[str]] | None = None,
        **recorder_options: Any,
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.model = model
        self.loss_fn = loss_fn
        self.batch = batch if batch is not None else lambda b: (b[0], b[1])
        chosen = METRICS if metrics is None else metrics
        self.metrics = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in chosen.items()}
        self.recorder_options = recorder_options
        self.recorder: Recorder | None = None
        self._resume_state: dict[str, Any] | None = None
        self._last_step: int | None = None
        self._logged: tuple[int, dict[str, float]] | None = None  # the last rec.log

    # ------------------------------------------------------------------ what to record
    def network(self, pl_module: pl.LightningModule) -> nn.Module:
        """The network the recorder measures (see ``model``)."""
        if isinstance(self.model, nn.Module):
            return self.model
        if callable(self.model):
            return self.model(pl_module)
        if isinstance(self.model, str):
            return getattr(pl_module, self.model)
        inner = getattr(pl_module, "model", None)
        return inner if isinstance(inner, nn.Module) else pl_module

    def loss(self, pl_module: pl.LightningModule) -> Callable[[Tensor, Tensor], Tensor]:
        """The training loss ``loss(logits, y)`` (see ``loss_fn``)."""
        if self.loss_fn is not None:
            return self.loss_fn
        for name in ("loss_fn", "criterion"):
            found = getattr(pl_module, name, None)
            if callable(found):
                return found
        return F.cross_entropy

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        options = dict(self.recorder_options)
        accumulate = getattr(trainer, "accumulate_grad_batches", 1)
        batches = trainer.num_training_batches
        if isinstance(batches, int) and batches > 0 and batches % accumulate == 0:
            options.setdefault("steps_per_epoch", batches // accumulate)
        self.recorder = Recorder(
            self.network(pl_module),
            self.run_dir,
            loss_fn=self.loss(pl_module),
            optimizer=trainer.optimizers[0] if trainer.optimizers else None,
            resume=self._resume_state is not None,
            **options,
        )
        if self._resume_state is not None:
            self.recorder.load_state_dict(self._resume_state["recorder"])
            logged = self._resume_state.get("logged")
            if logged is not None:  # logged after the checkpoint's step: not in the record now
                self._log(int(logged[0]), dict(logged[1]))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.recorder is None or step == self._last_step:
            return
        self._last_step = step
        x, y = self.batch(batch)
        self.recorder.step(x, y, step=step, epoch=trainer.current_epoch)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is None or trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        values = {}
        for variable, names in self.metrics.items():
            found = next((name for name in names if name in logged), None)
            if found is not None:
                values[variable] = float(logged[found])
        if values:
            self._log(trainer.global_step, values)

    def _log(self, step: int, values: dict[str, float]) -> None:
        self.recorder.log(step=step, **values)
        self._logged = (step, values)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.recorder is not None:
            self.recorder.close(final=False)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The recorder's state (:meth:`Recorder.state_dict`) and the metrics logged for the
        step the record continues from (a validation just before the checkpoint)."""
        if self.recorder is None:
            return {}
        state = {"recorder": self.recorder.state_dict()}
        if self._logged is not None and self._logged[0] >= state["recorder"]["step"]:
            state["logged"] = self._logged
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_state = state_dict if "recorder" in state_dict else None
