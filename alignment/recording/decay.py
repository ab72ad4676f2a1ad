"""The weight-decay factor c_t of the feedback residual, tracked at every optimizer step.

Under ``torch.optim.SGD`` with coupled L2 and the same lr, momentum and weight decay on W and on
R (Kolen–Pollack: on W and B), the data terms of the updates cancel in D = R − BᵀW (KP: B − W),
since grad_R = Bᵀ grad_W (KP: grad_B = grad_W), and D_t = c_t·D_0 exactly, with c_t the scalar
recursion of :func:`alignment.theory.decay_factors` (README, "Theory, tested"). The recorder
sees every update: :class:`ResidualDecay` registers a step post-hook on the optimizer and
advances the recursion with the lr, momentum and weight decay of each update as it happens
(set by the training loop or a torch LR scheduler, whenever), so a record needs no config. A
post-hook, not a pre-hook: ``optimizer.step(closure)`` (PyTorch Lightning) computes the
gradients inside the step, so only after it is known which tensors the update moved.

c is 1 at the first :meth:`~alignment.Recorder.step` call (the reference, usually step 0) and
counts only updates after it. It is unknown (NaN from then on) when the identity does not hold
or the recursion cannot know its state:

* no optimizer, or one that is not exactly ``torch.optim.SGD``;
* a tracked tensor (PFA's W and R, KP's W and B) not in the optimizer, without a gradient at
  an update (SGD then skips it), or tracked tensors in parameter groups that differ in lr,
  momentum, dampening, nesterov or weight decay (groups of other tensors, e.g. biases without
  decay, do not matter);
* a learned feedback tensor with a sparsity mask (density < 1: its masked-out entries keep R at
  0 while BᵀW moves with the data);
* momentum buffers of the tracked tensors that predate the reference (a recorder attached
  mid-training to a momentum optimizer), or a record continued without
  :meth:`~alignment.Recorder.load_state_dict` of a checkpoint that holds the recursion state.

The state (c, the momentum buffer's factor, validity) is part of
:meth:`alignment.Recorder.state_dict`, so a resumed run continues the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from alignment.layers.base import FeedbackLayer
from alignment.rules import KP, PFA
from alignment.theory import decay_step

HYPERPARAMETERS = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
"""The parameter-group settings that must agree over the tracked tensors."""


def residual_tensors(model: nn.Module) -> tuple[list[Tensor], bool]:
    """(W and the learned feedback of every PFA/KP layer, whether all of them are unmasked)."""
    tensors: list[Tensor] = []
    dense = True
    for module in model.modules():
        if not isinstance(module, FeedbackLayer):
            continue
        if isinstance(module.rule, PFA):
            learned = "R"
        elif isinstance(module.rule, KP):
            learned = "B"
        else:
            continue
        tensors += [module.weight, getattr(module, learned)]
        dense = dense and getattr(module, f"{learned}_mask", None) is None
    return tensors, dense


class ResidualDecay:
    """c_t of the feedback residual, advanced by a step post-hook on ``optimizer``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self.optimizer = optimizer
        self.tensors, dense = residual_tensors(model)
        self.c = 1.0
        self.buf: float | None = None
        self.started = False
        self.valid = bool(self.tensors) and dense and type(optimizer) is torch.optim.SGD
        self._handle = optimizer.register_step_post_hook(self._after_update) if self.valid else None

    @property
    def factor(self) -> float:
        """c_t after the updates so far (NaN when unknown)."""
        return self.c if self.valid else math.nan

    def start(self, *, known: bool = True) -> None:
        """Take the weights as they are now as the reference (c = 1); at the first step call.
        ``known=False``: a continued record whose earlier updates the recursion never saw."""
        if self.started:
            return
        self.started = True
        if not known:
            self.valid = False
        elif self.valid and any(self._momentum_buffer(t) is not None for t in self.tensors):
            self.valid = False  # the buffers carry updates the recursion never saw

    def invalidate(self) -> None:
        """The state is unknown from here on (e.g. a record continued without it)."""
        self.started, self.valid = True, False

    def _momentum_buffer(self, tensor: Tensor) -> Tensor | None:
        return self.optimizer.state.get(tensor, {}).get("momentum_buffer")

    def _group(self) -> dict[str, Any] | None:
        """The hyperparameters shared by every tracked tensor, or None if they differ."""
        groups = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        settings = set()
        for tensor in self.tensors:
            group = groups.get(id(tensor))
            if group is None or tensor.grad is None:
                return None
            settings.add(tuple(float(group.get(k, 0.0)) for k in HYPERPARAMETERS))
        if len(settings) != 1:
            return None
        return dict(zip(HYPERPARAMETERS, settings.pop(), strict=True))

    def _after_update(self, optimizer: torch.optim.Optimizer, *args: object) -> None:
        if optimizer is not self.optimizer or not (self.started and self.valid):
            return
        group = self._group()
        if group is None:
            self.valid = False
            return
        self.c, self.buf = decay_step(
            self.c,
            self.buf,
            group["lr"],
            group["weight_decay"],
            group["momentum"],
            dampening=group["dampening"],
            nesterov=bool(group["nesterov"]),
        )

    def remove(self) -> None:
        """Unregister the hook (at :meth:`alignment.Recorder.close`)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def state_dict(self) -> dict[str, Any]:
        return {"c": self.c, "buf": self.buf, "started": self.started, "valid": self.valid}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from ``state``; None (a checkpoint without it): unknown from here on."""
        if state is None:
            self.invalidate()
            return
        self.c = float(state["c"])
        self.buf = None if state["buf"] is None else float(state["buf"])
        self.started = bool(state["started"])
        self.valid = bool(state["valid"]) and self._handle is not None
