"""Mixed precision and torch.compile of the training step (config keys ``amp`` and ``compile``).

``amp: bf16`` runs the forward under ``torch.autocast`` in bfloat16 (CPU or CUDA), ``amp: fp16``
in float16 with a ``torch.amp.GradScaler`` (its state goes into the checkpoint); the rules'
backward replays the forward's autocast (:mod:`alignment.layers.autocast`). Parameters, optimizer
state, evaluation and the recorder stay in float32. ``compile`` wraps the training module in
``torch.compile`` (``true``: inductor, or the backend named).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from alignment.config import Config, ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast for the forward, loss scaling for the backward and the optimizer step."""

    def __init__(self, amp: str, device: str) -> None:
        self.device_type = torch.device(device).type
        self.dtype = DTYPES.get(amp)
        if amp == "bf16" and self.device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                "amp=bf16: this GPU has no bfloat16 support; use --set amp=fp16 (with loss "
                "scaling) or amp=off"
            )
        if self.dtype is not None and not torch.amp.is_autocast_available(self.device_type):
            raise ConfigError(
                f"amp={amp}: torch has no autocast for device {self.device_type!r}; use "
                "--set amp=off"
            )
        self.scaler = torch.amp.GradScaler(self.device_type) if amp == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context for the forward and the loss."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step (skipped by the scaler when a gradient overflowed in fp16)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint keeps (the GradScaler's scale and counters under fp16)."""
        return {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}

    def load_state_dict(self, checkpoint: dict[str, Any] | None) -> None:
        """Restore the scaler from a checkpoint (or nothing, when none or not fp16)."""
        if self.scaler is not None and checkpoint and "grad_scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["grad_scaler"])


def compiled(module: nn.Module, config: Config) -> nn.Module:
    """``module`` wrapped in ``torch.compile`` as ``config.compile`` says (itself if false)."""
    if config.compile is False:
        return module
    return torch.compile(module, backend="inductor" if config.compile is True else config.compile)
