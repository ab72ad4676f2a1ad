"""The summary table of a run: accuracy and each layer's final alignment."""

from __future__ import annotations

import numpy as np
import xarray as xr


def _last_finite(da: xr.DataArray) -> np.ndarray:
    """Per layer, the value at the last step where it is finite (NaN if never)."""
    values = np.moveaxis(np.asarray(da.transpose("step", ...).values, dtype=float), 0, -1)
    finite = np.isfinite(values)
    last = np.where(finite.any(-1), values.shape[-1] - 1 - np.argmax(finite[..., ::-1], -1), 0)
    picked = np.take_along_axis(values, last[..., None], -1)[..., 0]
    return np.where(finite.any(-1), picked, np.nan)


def summarize(ds: xr.Dataset, title: str = "") -> str:
    """Final and best test accuracy, and each layer's final feedback and gradient alignment."""
    lines = [title] if title else []
    if "test_accuracy" in ds:
        acc = ds["test_accuracy"].values
        acc = acc[np.isfinite(acc)]
        if acc.size:
            lines.append(
                f"rule {ds.attrs.get('rule', '?')}  seed {ds.attrs.get('seed', '?')}  "
                f"test accuracy: final {100 * acc[-1]:.2f} %  best {100 * acc.max():.2f} %"
            )
    columns = [name for name in ("feedback_alignment", "grad_alignment") if name in ds]
    if "layer" in ds.dims and columns:
        finals = {name: _last_finite(ds[name]) for name in columns}
        header = f"  {'layer':<28}" + "".join(f"{name + ' (°)':>24}" for name in columns)
        lines.append(header)
        for i, layer in enumerate(ds["layer"].values):
            cells = "".join(f"{finals[name][i]:>24.2f}" for name in columns)
            lines.append(f"  {layer!s:<28}{cells}")
    return "\n".join(lines)
