"""Jacobian alignment distributions and singular-value spectra, true vs feedback (beyond the
paper).

``jacobian_alignment`` (…, step, layer, sample) is, per probe sample, the angle between the true
Jacobian of the logits w.r.t. the layer output and the feedback Jacobian the rule uses;
``jacobian_sv_true``/``jacobian_sv_fb`` (…, step, layer, sv) are their singular values averaged
over the probe batch. Both are recorded on a sparser schedule (NaN at the other steps).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import xarray as xr

from alignment.analyses._common import finite_steps, label_attrs, last_finite, run_dims
from alignment.analyses.runs import as_combined, is_stacked
from alignment.analyses.trajectories import with_depth


def jacobian_steps(ds: xr.Dataset) -> np.ndarray:
    """The steps at which Jacobian quantities were recorded."""
    if "jacobian_alignment" not in ds:
        return np.array([], dtype=int)
    return finite_steps(ds["jacobian_alignment"])


def _step(ds: xr.Dataset, step: int | None) -> int:
    steps = jacobian_steps(ds)
    if not len(steps):
        raise ValueError("no Jacobian quantities recorded (record.jacobian: never?)")
    if step is None:
        return int(steps[-1])
    if step not in steps:
        raise ValueError(f"no Jacobians recorded at step {step}; recorded at {steps.tolist()}")
    return int(step)


def _pooled(ds: xr.Dataset) -> list[str]:
    """Dims pooled into one distribution: seeds and probe samples."""
    return [d for d in ("seed", "sample") if d in ds.dims]


def jacobian_alignment_distribution(
    ds: xr.Dataset,
    *,
    step: int | None = None,
    bins: int | Sequence[float] = 36,
    quantiles: Sequence[float] = (0.25, 0.5, 0.75),
) -> xr.Dataset:
    """Distribution of the Jacobian alignment over probe samples (and seeds) at ``step``
    (default: the last Jacobian step), per rule and layer.

    Variables: ``histogram`` (…, layer, angle) probability density per degree on bin centres
    ``angle`` (``bins`` equal bins on [0°, 180°] or explicit edges), ``angle_quantile`` (…, layer,
    quantile) and ``pooled`` (…, layer): the same angles pooled over layers as well, histogram.
    """
    ds = as_combined(ds) if is_stacked(ds) else ds
    step = _step(ds, step)
    # one step of every run, small: read it (histograms and quantiles pool over runs)
    da = ds["jacobian_alignment"].sel(step=step, drop=True).compute()
    edges = np.linspace(0.0, 180.0, bins + 1) if isinstance(bins, int) else np.asarray(bins, float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    pool = _pooled(ds)

    def histogram(values: np.ndarray) -> np.ndarray:
        values = values[np.isfinite(values)]
        if not values.size:
            return np.full(len(centres), np.nan)
        return np.histogram(values, bins=edges, density=True)[0]

    def distribution(over: list[str]) -> xr.DataArray:
        stacked = da.stack(pool_=over, create_index=False) if over else da.expand_dims("pool_")
        return xr.apply_ufunc(
            histogram,
            stacked,
            input_core_dims=[["pool_"]],
            output_core_dims=[["angle"]],
            vectorize=True,
        ).assign_coords(angle=centres)

    hist = distribution(pool)
    pooled = distribution([*pool, "layer"])
    quantile = (
        da.quantile(list(quantiles), dim=pool, skipna=True).transpose(..., "quantile")
        if pool
        else da.expand_dims(quantile=list(quantiles))
    )
    attrs = label_attrs(da.attrs)
    density = {
        "long_name": "probability density",
        "units": "1/deg",
        "description": f"Histogram density of the {attrs['long_name']} over "
        f"{', '.join(pool) or 'runs'}.",
    }
    out = xr.Dataset(
        {
            "histogram": hist.assign_attrs(density),
            "pooled": pooled.assign_attrs(
                {**density, "description": density["description"] + " and layers."}
            ),
            "angle_quantile": quantile.assign_attrs(attrs),
        }
    )
    out["angle"].attrs = {**attrs, "description": "Bin centres."}
    out["quantile"].attrs = {"long_name": "quantile", "units": "1", "description": "Probability."}
    out.attrs = {"step": step, **{k: v for k, v in ds.attrs.items() if k in ("run_dims", "runs")}}
    return with_depth(out)


def singular_value_spectra(ds: xr.Dataset, *, step: int | None = None) -> xr.Dataset:
    """Singular values of the true and of the feedback Jacobian (probe-batch means) at ``step``
    (default: the last Jacobian step), averaged over seeds, and their ratio fb/true per index."""
    ds = as_combined(ds) if is_stacked(ds) else ds
    step = _step(ds, step)
    out = {}
    for name in ("jacobian_sv_true", "jacobian_sv_fb"):
        da = ds[name].sel(step=step, drop=True)
        out[name] = da.mean("seed", keep_attrs=True) if "seed" in da.dims else da
    ratio = out["jacobian_sv_fb"] / out["jacobian_sv_true"].where(out["jacobian_sv_true"] > 0)
    ratio.attrs = {
        "long_name": "singular value ratio fb/true",
        "units": "1",
        "description": "jacobian_sv_fb / jacobian_sv_true, index by index (both descending).",
    }
    result = xr.Dataset({**out, "sv_ratio": ratio}).assign_coords(sv=np.arange(ds.sizes["sv"]) + 1)
    result["sv"].attrs = {
        "long_name": "singular value index",
        "units": "1",
        "description": "1 = largest.",
    }
    result.attrs = {
        "step": step,
        "run_dims": ds.attrs.get("run_dims", "[]") if run_dims(ds) else "[]",
    }
    return with_depth(result)


PER_SAMPLE = ("jacobian_alignment", "delta_alignment")


def final_per_sample(
    ds: xr.Dataset, *, variables: Sequence[str] = PER_SAMPLE, step: int | None = None
) -> xr.Dataset:
    """Per-sample quantities of every run at its last record that has them (or at ``step``),
    layers kept apart: dims (rule, seed[, options], layer, sample). Each variable is taken at its
    own last finite record (Jacobians and δ may be recorded on different schedules); attr
    ``steps`` (JSON) says which step each variable comes from (the latest over runs)."""
    ds = as_combined(ds) if is_stacked(ds) else ds
    names = [n for n in variables if n in ds and bool(ds[n].notnull().any())]
    if not names:
        raise ValueError(f"final_per_sample: the runs record none of {', '.join(variables)}")
    out = {}
    steps = {}
    for name in names:
        da = ds[name]
        if step is not None:
            if step not in finite_steps(da):
                raise ValueError(f"no {name} recorded at step {step}")
            picked = da.sel(step=step, drop=True)
            steps[name] = int(step)
        else:
            picked = last_finite(da, "step")
            steps[name] = int(finite_steps(da)[-1])
        out[name] = picked.assign_attrs(label_attrs(da.attrs))
    result = xr.Dataset(out)
    result.attrs = {
        "steps": json.dumps(steps),
        **{k: v for k, v in ds.attrs.items() if k in ("run_dims", "runs")},
    }
    return with_depth(result)


def informative_layers(da: xr.DataArray, *, tolerance: float = 1e-3) -> list[str]:
    """The layers where the per-sample angle ``da`` differs from 0° anywhere (the output
    layer's Jacobian of the logits w.r.t. themselves is the identity for every rule: 0° by
    construction, no information)."""
    other = [d for d in da.dims if d != "layer"]
    spread = abs(da).max(other, skipna=True).compute() if other else abs(da)
    return [
        str(layer)
        for layer, v in zip(da["layer"].values, spread.values, strict=True)
        if v > tolerance
    ]
