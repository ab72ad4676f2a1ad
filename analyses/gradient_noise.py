"""Gradient noise across samples (beyond the paper): how much each rule's update varies from one
probe sample to the next (``record.dynamics: [gradient_noise]``: per-sample rule updates through
``torch.func.vmap``).

:func:`gradient_noise_summary` reduces the recorded per-sample angles ``sample_grad_angle``
(between each sample's rule update and the probe batch's BP gradient) to their mean, standard
deviation and quantiles over the probe samples, and carries the recorded ``grad_snr``;
:func:`final_gradient_noise` takes both at each run's last probe record.
"""

from __future__ import annotations

from collections.abc import Sequence

import xarray as xr

from alignment.analyses._common import label_step_coords, labelled, last_finite, select_variables
from alignment.analyses.runs import as_combined

VARIABLES = ("grad_snr", "sample_grad_angle")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
NOT_RECORDED = (
    "the runs did not record grad_snr and sample_grad_angle (set record.dynamics: "
    "[gradient_noise], or Recorder(dynamics=['gradient_noise']))"
)


def gradient_noise_summary(ds: xr.Dataset, *, quantiles: Sequence[float] = QUANTILES) -> xr.Dataset:
    """Per run, record and layer: ``grad_snr`` (as recorded), ``sample_grad_angle_mean``,
    ``sample_grad_angle_std`` (ddof 1) and ``sample_grad_angle_quantile`` (with a leading dim
    ``quantile``) of the per-sample angles to the BP gradient over the probe samples. NaN at
    records without them. One run, a run stack or a grid; lazy runs stay lazy."""
    if not set(VARIABLES) & set(ds.data_vars):
        raise ValueError(f"gradient_noise_summary: {NOT_RECORDED}")
    ds = as_combined(select_variables(ds, VARIABLES))
    out = xr.Dataset()
    if "grad_snr" in ds:
        out["grad_snr"] = ds["grad_snr"]
    if "sample_grad_angle" in ds:
        angle = ds["sample_grad_angle"]
        spread = "over the probe samples of the angle between each sample's rule update and the "
        spread += "probe batch's BP gradient"
        out["sample_grad_angle_mean"] = labelled(
            angle.mean("sample"), "mean per-sample angle to BP", "deg", f"Mean {spread}."
        )
        out["sample_grad_angle_std"] = labelled(
            angle.std("sample", ddof=1),
            "sd of per-sample angles to BP",
            "deg",
            f"Standard deviation {spread}.",
        )
        out["sample_grad_angle_quantile"] = labelled(
            # skipna=False: a record holds every sample's angle or none (no all-NaN warnings)
            (angle.chunk({"sample": -1}) if angle.chunks is not None else angle).quantile(
                list(quantiles), "sample", skipna=False
            ),
            "per-sample angle to BP, quantile",
            "deg",
            f"Quantiles {spread}.",
        )
    out.attrs = {"run_dims": ds.attrs.get("run_dims", "[]")}
    return label_step_coords(out)


def final_gradient_noise(ds: xr.Dataset) -> xr.Dataset:
    """``grad_snr`` and ``sample_grad_angle`` at each run's last record that holds them (the
    probe record after the last update): dims (run dims…, layer[, sample])."""
    if not set(VARIABLES) & set(ds.data_vars):
        raise ValueError(f"final_gradient_noise: {NOT_RECORDED}")
    ds = as_combined(select_variables(ds, VARIABLES))
    out = xr.Dataset({name: last_finite(ds[name]) for name in VARIABLES if name in ds})
    out.attrs = {"run_dims": ds.attrs.get("run_dims", "[]")}
    return out
