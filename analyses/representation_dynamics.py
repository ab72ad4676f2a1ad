"""Representations over training (beyond the paper): how each layer's output on the probe batch
(the recorded ``activation``, ``record.dynamics: [representations]``) changes while a rule
trains, and how close it comes to what BP learns.

* :func:`cka_to_reference`: linear CKA (:mod:`analyses.cka`) between a rule's layer and the same
  layer of the BP run with the same seed, at every probe record (the runs share the probe batch:
  checked);
* :func:`cka_across_layers`: linear CKA between the layers of one run, a layer × layer matrix
  per record;
* :func:`effective_rank`: the participation ratio (Σλ)²/Σλ² of the eigenvalues λ of each layer's
  representation covariance over the probe samples.

Every function takes one run, a run stack or a grid (:func:`analyses.runs.as_combined`), works on
lazy runs (one task per run) and returns variables with ``long_name`` and ``units``.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import xarray as xr

from alignment.analyses._common import label_step_coords, run_dims, select_variables
from alignment.analyses.cka import centred_grams, cka_from_grams, linear_cka_padded
from alignment.analyses.rules import rule_label
from alignment.analyses.runs import as_combined, collapse_options

ACTIVATION = "activation"
FEATURE = "unit"
"""The dim along which ``activation`` holds each layer's (NaN-padded) outputs."""
CORE = ["sample", FEATURE]
NOT_RECORDED = (
    "the runs did not record activation (set record.dynamics: [representations], or "
    "Recorder(dynamics=['representations']))"
)


def _activations(ds: xr.Dataset, caller: str) -> xr.Dataset:
    if ACTIVATION not in ds:
        raise ValueError(f"{caller}: {NOT_RECORDED}")
    return as_combined(select_variables(ds, [ACTIVATION, "probe_input"]))


def _apply(function, *arrays: xr.DataArray, core: list[list[str]], out: list[str], **sizes):
    """``xr.apply_ufunc`` on numpy or dask (lazy runs: one task per chunk) alike."""
    return xr.apply_ufunc(
        function,
        *arrays,
        input_core_dims=core,
        output_core_dims=[out],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"allow_rechunk": True, "output_sizes": sizes} if sizes else None,
    )


def _check_probes(ds: xr.Dataset, reference: str) -> None:
    """Every run compares against the reference run of its seed on the same probe batch."""
    if "probe_input" not in ds:
        raise ValueError(
            "cka_to_reference: the runs have no probe_input, so it cannot be checked that they "
            "share the probe batch; open the runs with alignment.open_runs"
        )
    probes = ds["probe_input"]
    seeds = ds["seed"].values if "seed" in probes.dims else [None]
    for seed in seeds:
        at = probes if seed is None else probes.sel(seed=seed)
        ref = np.asarray(at.sel(rule=reference).values, dtype=float)
        if np.isnan(ref).all():
            continue  # no reference run for this seed: its CKA stays NaN
        for rule in ds["rule"].values:
            mine = np.asarray(at.sel(rule=rule).values, dtype=float)
            if rule == reference or np.isnan(mine).all():
                continue
            if mine.shape != ref.shape or not np.array_equal(mine, ref, equal_nan=True):
                raise ValueError(
                    f"cka_to_reference: the {rule_label(str(rule))} run of seed {seed} has a "
                    f"different probe batch (probe_input) than the {rule_label(reference)} run of "
                    "that seed; CKA compares representations of the same samples: train both "
                    "with the same seed, data and record.probe_size"
                )


def cka_to_reference(
    ds: xr.Dataset, *, reference: str = "bp", debiased: bool = False
) -> xr.Dataset:
    """Linear CKA between each run's layer outputs and the ``reference`` rule's run of the same
    seed, layer by layer, at every record that holds activations.

    ``ds``: runs combined with :func:`alignment.open_runs` or :func:`analyses.combine` (run dims
    rule and seed; other factors must leave one variant per rule, as :func:`collapse_options`
    requires). Raises ValueError when there is no ``reference`` run, when activations were not
    recorded, or when a run's probe batch differs from its reference's. Returns ``cka_to_bp``
    (or ``cka_to_<reference>``), dims (rule, seed, step, layer); 1 for the reference itself, NaN
    at records without activations and for seeds without a reference run. ``debiased``: the
    debiased CKA (:func:`analyses.cka.debiased_cka_from_grams`), which, unlike linear CKA, stays
    near 0 for unrelated representations of a few probe samples in wide layers.
    """
    ds = collapse_options(_activations(ds, "cka_to_reference"))
    if reference not in ds["rule"].values:
        rules = ", ".join(str(r) for r in ds["rule"].values)
        raise ValueError(
            f"cka_to_reference: no {reference!r} run among the runs (rules: {rules}); add the "
            f"{rule_label(reference)} runs of the same seeds"
        )
    _check_probes(ds, reference)
    act = ds[ACTIVATION]
    ref = act.sel(rule=reference, drop=True)
    cka = _apply(
        functools.partial(linear_cka_padded, debiased=debiased), act, ref, core=[CORE, CORE], out=[]
    )
    name = f"cka_to_{reference}"
    kind = "debiased CKA" if debiased else "CKA"
    cka.attrs = {
        "long_name": f"{kind} to {rule_label(reference)}",
        "units": "1",
        "description": f"Linear {kind} between the layer's outputs on the probe batch and those of "
        f"the same layer in the {rule_label(reference)} run with the same seed, at the same "
        "step (Kornblith et al., 2019); 1: the same representation up to rotation and scale.",
    }
    out = label_step_coords(xr.Dataset({name: cka}))
    out.attrs = {
        "reference": reference,
        "debiased": int(debiased),
        "run_dims": ds.attrs.get("run_dims", "[]"),
    }
    return out


def _layer_matrix(x: np.ndarray) -> np.ndarray:
    """(…, layer, sample, feature) → CKA (…, layer, layer_b)."""
    grams, broken = centred_grams(x)
    cka = cka_from_grams(grams[..., :, None, :, :], grams[..., None, :, :, :])
    return np.where(broken[..., :, None] | broken[..., None, :], np.nan, cka)


def cka_across_layers(ds: xr.Dataset) -> xr.Dataset:
    """Linear CKA between every pair of layers of each run, at every record with activations:
    ``cka_layers`` (run dims…, step, layer, layer_b), symmetric, 1 on the diagonal."""
    ds = _activations(ds, "cka_across_layers")
    act = ds[ACTIVATION]
    layers = act["layer"].values
    cka = _apply(
        _layer_matrix,
        act,
        core=[["layer", *CORE]],
        out=["layer", "layer_b"],
        layer_b=len(layers),
    ).assign_coords(layer_b=layers)
    cka.attrs = {
        "long_name": "CKA between layers",
        "units": "1",
        "description": "Linear CKA between the outputs of two layers of the same run on the "
        "probe batch (Kornblith et al., 2019).",
    }
    return _with_run_attrs(label_step_coords(xr.Dataset({"cka_layers": cka})), ds)


def participation_ratio(x: np.ndarray) -> np.ndarray:
    """(Σλ)²/Σλ² of the covariance eigenvalues λ of representations ``x`` (…, sample, feature),
    broadcast over leading axes; NaN-padded features ignored, NaN for a missing record."""
    grams, broken = centred_grams(x)
    trace = np.trace(grams, axis1=-2, axis2=-1)
    squares = np.sum(grams * grams, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(squares > 0, trace**2 / squares, np.nan)
    return np.where(broken, np.nan, ratio)


def effective_rank(ds: xr.Dataset) -> xr.Dataset:
    """Participation ratio (Σλ)²/Σλ² of the eigenvalues λ of each layer's representation
    covariance over the probe samples (from the centred Gram matrix, which has the same non-zero
    eigenvalues): ``effective_rank`` (run dims…, step, layer). r for a representation spread
    evenly over r directions; at most samples − 1."""
    ds = _activations(ds, "effective_rank")
    rank = _apply(participation_ratio, ds[ACTIVATION], core=[CORE], out=[])
    rank.attrs = {
        "long_name": "effective rank",
        "units": "1",
        "description": "Participation ratio (Σλ)²/Σλ² of the eigenvalues of the covariance of "
        "the layer's outputs over the probe samples.",
    }
    return _with_run_attrs(label_step_coords(xr.Dataset({"effective_rank": rank})), ds)


def _with_run_attrs(out: xr.Dataset, source: xr.Dataset) -> xr.Dataset:
    out.attrs = {"run_dims": source.attrs.get("run_dims", json.dumps(list(run_dims(source))))}
    return out
