"""Network-level scalars: loss, train_accuracy, lr, weight_decay (and test_accuracy, test_loss,
val_accuracy, val_loss when the training loop passes them to ``Recorder.step``).

loss and train_accuracy come from the rule's own forward of the recorded training batch (the same
logits as the training step); lr and weight_decay from ``optimizer.param_groups[0]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from alignment.recording.quantities.common import NAN, Quantity

if TYPE_CHECKING:
    from alignment.recording.context import StepContext

SCALARS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss")
"""Variables a training loop passes as keywords to ``Recorder.step``."""


class NetworkScalars(Quantity):
    variables = ("loss", "train_accuracy", "lr", "weight_decay")

    def compute(self, ctx: StepContext) -> dict[str, np.ndarray]:
        result = ctx.train_rule
        out = {"loss": np.float64(float(result.loss))}
        y = ctx.y
        if result.logits.dim() == 2 and not torch.is_floating_point(y) and y.dim() == 1:
            correct = (result.logits.argmax(-1) == y).to(torch.float64).mean()
            out["train_accuracy"] = np.float64(float(correct))
        if ctx.optimizer is not None:
            group = ctx.optimizer.param_groups[0]
            out["lr"] = np.float64(float(group.get("lr", NAN)))
            out["weight_decay"] = np.float64(float(group.get("weight_decay", NAN)))
        return out


QUANTITY = NetworkScalars()
