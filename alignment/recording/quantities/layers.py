"""The coordinates that describe each layer on the ``layer`` dim (see ``schema.LAYER_COORDS``).

Module type, fan-in and fan-out (features of a Linear layer, channels of a conv layer), kernel
size ('kh×kw', '' for Linear), the layer's rule and its options ``k`` and ``density`` (NaN where
the rule has no such option). Written once into the static part of the record.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from alignment.recording.schema import LAYER_COORDS

if TYPE_CHECKING:
    from alignment.layers.base import FeedbackLayer
    from alignment.recording.context import Network


def _fans(layer: FeedbackLayer) -> tuple[int, int]:
    if hasattr(layer, "in_channels"):
        return int(layer.in_channels), int(layer.out_channels)
    if hasattr(layer, "in_features"):
        return int(layer.in_features), int(layer.out_features)
    return int(np.prod(layer.weight.shape[1:])), int(layer.weight.shape[0])


def _kernel(layer: FeedbackLayer) -> str:
    size = getattr(layer, "kernel_size", None)
    return "" if size is None else "×".join(str(int(s)) for s in size)


def _option(layer: FeedbackLayer, name: str) -> float:
    value = layer.rule.options().get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def describe(layer: FeedbackLayer) -> dict[str, object]:
    """One layer's values of every coordinate of ``LAYER_COORDS``."""
    fan_in, fan_out = _fans(layer)
    return {
        "layer_type": type(layer).__name__,
        "layer_fan_in": fan_in,
        "layer_fan_out": fan_out,
        "layer_kernel_size": _kernel(layer),
        "layer_rule": layer.rule.name,
        "layer_k": _option(layer, "k"),
        "layer_density": _option(layer, "density"),
    }


def layer_coords(net: Network) -> dict[str, xr.Variable]:
    """The layer-describing coordinates of ``net``, in forward order."""
    rows = [describe(layer) for layer in net.layers.values()]
    dtypes = {
        "layer_fan_in": np.int64,
        "layer_fan_out": np.int64,
        "layer_k": np.float64,
        "layer_density": np.float64,
    }
    return {
        name: xr.Variable(
            ("layer",),
            np.array([row[name] for row in rows], dtype=dtypes.get(name, object)),
            var.attrs,
        )
        for name, var in LAYER_COORDS.items()
    }
