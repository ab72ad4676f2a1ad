"""Weight initialisation shared by all models."""

from __future__ import annotations

from torch import nn

INITS = ("xavier", "kaiming")


def init_weights(model: nn.Module, init: str = "xavier") -> nn.Module:
    """Initialise every ``nn.Linear`` / ``nn.Conv2d`` in ``model`` in place.

    ``"xavier"`` (Xavier-uniform, the setting of arXiv 2405.20594's experiments) or
    ``"kaiming"`` (Kaiming-uniform for ReLU). Biases are zeroed; BatchNorm layers are left
    untouched.
    Returns ``model``.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid choices are {', '.join(map(repr, INITS))}")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
