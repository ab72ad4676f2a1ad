"""Model-touching code: the representations a trained network computes on the probe batch.

Everything else in :mod:`alignment.analyses` works on Datasets; this module runs a model (torch,
no gradients) and turns what its layers output into a Dataset that
:func:`alignment.analyses.cka.cka_matrix` compares. It reads no files: give it the model (e.g.
rebuilt from a run's checkpoint, see ``alignment.figures.fig_cka.load_model``) and the inputs
(:func:`probe_inputs` of the run's record).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from alignment.layers import FeedbackLayer


def probe_inputs(ds: xr.Dataset) -> torch.Tensor:
    """The run's fixed probe batch (variable ``probe_input``) as a float32 tensor."""
    if "probe_input" not in ds:
        raise ValueError("probe_inputs: the record has no probe_input")
    return torch.as_tensor(
        np.asarray(ds["probe_input"].transpose("sample", ...).values, np.float32)
    )


def converted_layers(model: nn.Module) -> list[str]:
    """Names of the converted (Linear/Conv2d feedback) layers, in forward (module) order."""
    return [name for name, module in model.named_modules() if isinstance(module, FeedbackLayer)]


@torch.no_grad()
def layer_outputs(
    model: nn.Module, inputs: torch.Tensor, *, layers: Sequence[str] | None = None
) -> xr.Dataset:
    """Each layer's output (before its nonlinearity) on ``inputs``, in eval mode.

    One variable per layer, dims (``sample``, ``<layer>__feature``), outputs flattened per sample;
    default layers: every converted layer. The model's train/eval mode is restored afterwards.
    """
    names = list(layers) if layers is not None else converted_layers(model)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"layer_outputs: no module named {', '.join(missing)}")
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach())
        )
        for name in names
    ]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(inputs.to(device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    data = {}
    for name in names:
        values = captured[name].flatten(1).to(torch.float64).cpu().numpy()
        data[name] = xr.Variable(
            ("sample", f"{name}__feature"),
            values,
            {
                "long_name": f"output of {name}",
                "units": "1",
                "description": "Layer output on the probe batch (before the nonlinearity).",
            },
        )
    return xr.Dataset(data)
