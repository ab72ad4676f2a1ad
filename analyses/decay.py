"""Weight decay aligns the product exactly (alignment.theory, property 1): the recorded residual
against c_t.

For PFA, D = R − BᵀW; for KP, D = B − W. Under ``torch.optim.SGD`` with the same lr, momentum and
coupled weight decay on both factors, the data terms cancel and D_t = c_t·D_0 with c_t from the
scalar recursion of :func:`alignment.theory.decay_factors`. The recorder writes ‖D‖ at each
recorded step *before* that step's update, so the record at step t has seen t updates.

c_t comes from the record itself where the recorder wrote it (``feedback_residual_predicted``,
computed from the optimizer while the run trained; own-loop runs have it, NaN where the identity
does not hold). Records without it (older trainer runs) get c_t recomputed from the run's own
trainer config (attr ``config``) and its steps per epoch (attr ``steps_per_epoch``, else read off
the ``epoch`` coordinate), exactly as the trainer sets them: lr per epoch, weight decay per step.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from alignment.analyses._common import finite_steps, label_step_coords
from alignment.analyses.runs import split_runs
from alignment.config import Config, config_from_dict
from alignment.theory import decay_factors
from alignment.training.schedules import learning_rate, weight_decay


def run_config(ds: xr.Dataset) -> Config:
    """The validated config of a single run (attr ``config``)."""
    data = json.loads(ds.attrs.get("config") or "{}")
    if isinstance(data, list):
        raise ValueError("run_config: a combined Dataset has one config per run; use split_runs")
    if not data or "optim" not in data:
        raise ValueError(
            "run_config: the run has no trainer config (attr config is empty: a Recorder run in "
            "its own loop)"
        )
    return config_from_dict(data, source="attrs['config']")


def steps_per_epoch(ds: xr.Dataset) -> int:
    """Optimizer steps per epoch: attr ``steps_per_epoch``, else the first step of epoch 1."""
    if "steps_per_epoch" in ds.attrs:
        return int(ds.attrs["steps_per_epoch"])
    epochs = np.asarray(ds["epoch"].values)
    if epochs.max() < 1:
        raise ValueError("steps_per_epoch: the run records no second epoch and no attr says")
    return int(ds["step"].values[np.argmax(epochs >= 1)])


def step_schedules(ds: xr.Dataset, *, n_steps: int | None = None) -> xr.Dataset:
    """lr and weight decay of the updates at steps 0 … n_steps − 1 (default: up to the last
    recorded step) of a single run, recomputed from its config, on a ``step`` dim."""
    config = run_config(ds)
    per_epoch = steps_per_epoch(ds)
    n = int(ds["step"].values.max()) if n_steps is None else n_steps
    steps = np.arange(n)
    lr = [
        learning_rate(config.optim.lr, config.lr_schedule, s // per_epoch, config.epochs)
        for s in steps
    ]
    wd = [weight_decay(config.optim.weight_decay, config.wd_schedule, s, per_epoch) for s in steps]
    out = xr.Dataset(
        {
            "lr": ("step", np.asarray(lr, dtype=float), _attrs("learning rate", "lr of the step")),
            "weight_decay": (
                "step",
                np.asarray(wd, dtype=float),
                _attrs("weight decay", "Coupled L2 coefficient of the step."),
            ),
        },
        coords={"step": steps},
    )
    return label_step_coords(out)


def _attrs(long_name: str, description: str, units: str = "1") -> dict[str, str]:
    return {"long_name": long_name, "units": units, "description": description}


PREDICTED = "feedback_residual_predicted"


def recorded_prediction(run: xr.Dataset) -> bool:
    """True if the run recorded c_t itself (finite ``feedback_residual_predicted``)."""
    return PREDICTED in run and bool(np.isfinite(np.asarray(run[PREDICTED].values)).any())


def _predicted(run: xr.Dataset) -> xr.DataArray:
    """c_t at every recorded step of one run: as recorded, else from its trainer config."""
    if recorded_prediction(run):
        c = run[PREDICTED]
        return xr.DataArray(
            np.asarray(c.values, dtype=float), dims="step", coords={"step": run["step"].values}
        )
    config = run_config(run)
    if config.optim.name != "sgd":
        raise ValueError(
            f"decay analysis: the run uses {config.optim.name!r}; the exact decay of R − BᵀW holds "
            "for SGD with coupled weight decay only (alignment.theory, property 1)"
        )
    steps = np.asarray(run["step"].values, dtype=int)
    schedules = step_schedules(run, n_steps=int(steps.max()))
    c = decay_factors(
        schedules["lr"].values,
        schedules["weight_decay"].values,
        config.optim.momentum,
        nesterov=config.optim.nesterov,
    )
    return xr.DataArray(c[steps], dims="step", coords={"step": steps})


def predicted_decay(ds: xr.Dataset) -> xr.DataArray:
    """The factor c_t with ‖D_t‖ = c_t·‖D_0‖ at each recorded step (single run)."""
    out = _predicted(ds)
    out.attrs = _attrs(
        "predicted decay factor c_t",
        "Exact factor of D = R − BᵀW (KP: B − W) after t SGD steps with coupled weight decay, "
        "from the run's lr and weight-decay schedules and momentum (alignment.theory, property 1).",
    )
    return label_step_coords(out)


def _one_run(run: xr.Dataset) -> dict[str, xr.DataArray]:
    residual = run["feedback_residual"]
    c = _predicted(run)
    both = np.intersect1d(finite_steps(residual), finite_steps(c))
    if not len(both):
        raise ValueError("decay analysis: no recorded step has both the residual and c_t")
    start = int(both[0])
    c = c / c.sel(step=start)
    ratio = residual / residual.sel(step=start)
    return {"residual_ratio": ratio, "predicted_decay": c, "relative_error": ratio / c - 1.0}


ATTRS = {
    "residual_ratio": _attrs(
        "‖R − BᵀW‖ / first record",
        "Recorded feedback_residual (PFA: ‖R − BᵀW‖, KP: ‖B − W‖) over its first recorded value.",
    ),
    "predicted_decay": _attrs(
        "predicted decay factor c_t",
        "c_t as recorded (feedback_residual_predicted) or from the run's own lr and weight-decay "
        "schedules (alignment.theory, property 1), over its value at the first recorded step.",
    ),
    "relative_error": _attrs(
        "relative deviation from c_t",
        "residual_ratio / predicted_decay − 1; 0 up to rounding while the identity holds.",
    ),
}


def decay_alignment(ds: xr.Dataset) -> xr.Dataset:
    """Recorded ‖D_t‖/‖D_0‖ per layer beside the predicted c_t, and their relative deviation.

    Works on a single run or a combined Dataset (each run with its own schedules); runs and
    layers without a residual (not PFA, PFA-o or KP) are NaN. Variables ``residual_ratio``
    (…, step, layer), ``predicted_decay`` (…, step), ``relative_error`` (…, step, layer).
    """
    if "feedback_residual" not in ds:
        raise ValueError("decay_alignment: the Dataset has no feedback_residual variable")
    # the residual alone (one number per run, step and layer) is read once, not run by run
    ds = ds[[n for n in ("feedback_residual", PREDICTED) if n in ds]].compute()
    template = ds["feedback_residual"]
    lead = [d for d in template.dims if d not in ("step", "layer")]
    shape = {
        name: template if name != "predicted_decay" else template.isel(layer=0, drop=True)
        for name in ATTRS
    }
    arrays = {name: np.full(da.shape, np.nan) for name, da in shape.items()}
    found = False
    for where, run in split_runs(ds):
        if not np.isfinite(run["feedback_residual"].values).any():
            continue
        found = True
        for name, da in _one_run(run).items():
            index = tuple(where[d] for d in lead)
            values = da.transpose(*[d for d in shape[name].dims if d in da.dims]).values
            arrays[name][index] = values
    if not found:
        raise ValueError(
            "decay_alignment: no run has a finite feedback_residual (PFA, PFA-o and KP record one)"
        )
    out = xr.Dataset(
        {
            name: xr.DataArray(arrays[name], dims=da.dims, coords=da.coords, attrs=ATTRS[name])
            for name, da in shape.items()
        }
    )
    out.attrs = {k: v for k, v in ds.attrs.items() if k in ("run_dims", "runs", "rule", "seed")}
    return label_step_coords(out)
