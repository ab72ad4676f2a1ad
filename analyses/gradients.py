"""Gradient alignment with BP, per layer and depth, for every rule (beyond the paper).

``grad_alignment`` is the angle between the rule's update for W and the true BP gradient of the
same loss at the same weights on the same batch; ``grad_norm``/``grad_bp_norm`` compares sizes.
"""

from __future__ import annotations

import xarray as xr

from alignment.analyses._common import labelled, last_finite
from alignment.analyses.runs import as_combined, is_stacked, seed_statistics
from alignment.analyses.trajectories import with_depth


def update_norm_ratio(ds: xr.Dataset) -> xr.DataArray:
    """‖rule update‖/‖BP gradient‖ per step and layer (NaN where the BP gradient is zero, e.g.
    a layer no loss reaches)."""
    bp = ds["grad_bp_norm"]
    return labelled(
        ds["grad_norm"] / bp.where(bp > 0),  # NaN / NaN is silent, 0 / 0 warns
        "update norm ratio",
        "1",
        "‖grad_W under the rule‖ / ‖grad_W under BP‖, same weights and batch.",
    )


def final_window(da: xr.DataArray, *, window: int = 1) -> xr.DataArray:
    """Per run and layer, the mean of the last ``window`` finite records along ``step``."""
    if window == 1:
        return last_finite(da, "step")
    finite = da.notnull()
    rank = finite.isel(step=slice(None, None, -1)).cumsum("step").isel(step=slice(None, None, -1))
    return da.where(finite & (rank <= window)).mean("step", skipna=True, keep_attrs=True)


def grad_alignment_by_depth(ds: xr.Dataset, *, window: int = 1, ddof: int = 1) -> xr.Dataset:
    """Gradient alignment (and update norm ratio, if recorded) per layer at the end of training:
    the mean of each run's last ``window`` records, then mean/std/sem/n over seeds on a ``stat``
    dim, with a ``depth`` coordinate on ``layer``."""
    ds = as_combined(ds) if is_stacked(ds) else ds
    out = {"grad_alignment": final_window(ds["grad_alignment"], window=window)}
    if "grad_norm" in ds and "grad_bp_norm" in ds:
        out["update_norm_ratio"] = final_window(update_norm_ratio(ds), window=window)
    result = seed_statistics(xr.Dataset(out), ddof=ddof)
    result.attrs = {k: v for k, v in ds.attrs.items() if k in ("run_dims", "runs")}
    return with_depth(result)
