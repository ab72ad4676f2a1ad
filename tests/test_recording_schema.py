"""The schema check: a valid Dataset passes; each kind of malformed Dataset is rejected with a
message that names the problem."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import xarray as xr

from alignment.recording.schema import (
    RAW_QUANTITIES,
    REQUIRED_ATTRS,
    VARIABLES,
    SchemaError,
    validate,
)


def attrs() -> dict:
    values = dict.fromkeys(REQUIRED_ATTRS, "x")
    return values | {"config": json.dumps({"lr": 0.1}), "rule_options": "{}", "seed": 0}


def variable(name: str, data: np.ndarray) -> xr.Variable:
    return xr.Variable(VARIABLES[name].dims, data, VARIABLES[name].attrs)


def good() -> xr.Dataset:
    steps, layers, samples = 3, 2, 4
    ds = xr.Dataset(
        {
            "loss": variable("loss", np.ones(steps)),
            "feedback_alignment": variable("feedback_alignment", np.full((steps, layers), 45.0)),
            "delta_alignment": variable(
                "delta_alignment", np.full((steps, layers, samples), np.nan)
            ),
            "probe_input": xr.Variable(
                ("sample", "feature"), np.zeros((samples, 5)), VARIABLES["probe_label"].attrs
            ),
            "update__fc": xr.Variable(
                ("raw_step", "fc__out", "fc__in"),
                np.zeros((1, 2, 5)),
                RAW_QUANTITIES["update"].attrs("fc"),
            ),
        },
        coords={
            "step": [0, 5, 9],
            "epoch": ("step", [0, 0, 1]),
            "layer": ["fc", "out"],
            "raw_step": [5],
            "raw_epoch": ("raw_step", [0]),
        },
        attrs=attrs(),
    )
    return ds


def test_a_valid_dataset_passes() -> None:
    ds = good()
    assert validate(ds) is ds


def _drop_attr(ds: xr.Dataset) -> None:
    del ds.attrs["seed"]


def _bad_json(ds: xr.Dataset) -> None:
    ds.attrs["config"] = "{lr: 0.1"


def _unknown(ds: xr.Dataset) -> None:
    ds["alignment"] = ("step", np.zeros(3))


def _wrong_dims(ds: xr.Dataset) -> None:
    ds["grad_alignment"] = xr.Variable(
        ("layer", "step"), np.zeros((2, 3)), VARIABLES["grad_alignment"].attrs
    )


def _no_units(ds: xr.Dataset) -> None:
    del ds["loss"].attrs["units"]


def _angle_range(ds: xr.Dataset) -> None:
    ds["feedback_alignment"][0, 0] = 181.0


def _duplicate_step(ds: xr.Dataset) -> None:
    ds.coords["step"] = [0, 5, 5]


def _no_epoch(ds: xr.Dataset) -> None:
    del ds.coords["epoch"]


def _numeric_layers(ds: xr.Dataset) -> None:
    ds.coords["layer"] = [0, 1]


def _raw_unknown(ds: xr.Dataset) -> None:
    ds["weights__fc"] = xr.Variable(
        ("raw_step", "fc__out"), np.zeros((1, 2)), RAW_QUANTITIES["update"].attrs("fc")
    )


def _raw_foreign_dim(ds: xr.Dataset) -> None:
    ds["grad_bp__fc"] = xr.Variable(
        ("raw_step", "out__out"), np.zeros((1, 2)), RAW_QUANTITIES["grad_bp"].attrs("fc")
    )


def _raw_no_layer(ds: xr.Dataset) -> None:
    del ds["update__fc"].attrs["layer"]


def _bad_probe(ds: xr.Dataset) -> None:
    ds["probe_input"] = xr.Variable(
        ("sample", "pixel"), np.zeros((4, 5)), VARIABLES["probe_label"].attrs
    )


def _run_dims(ds: xr.Dataset) -> None:
    ds.attrs["run_dims"] = json.dumps(["rule"])


CASES: dict[str, tuple[Callable[[xr.Dataset], None], str]] = {
    "missing attr": (_drop_attr, "attrs lack seed"),
    "bad JSON": (_bad_json, "'config' is not valid JSON"),
    "unknown variable": (_unknown, "unknown variable 'alignment'"),
    "wrong dims": (_wrong_dims, r"'grad_alignment' has dims \('layer', 'step'\)"),
    "missing units": (_no_units, "'loss' lacks the 'units' attribute"),
    "angle out of range": (_angle_range, "'feedback_alignment' has values outside"),
    "duplicate step": (_duplicate_step, "'step' must be strictly increasing"),
    "missing epoch": (_no_epoch, "'epoch' on dim 'step' is missing"),
    "numeric layer names": (_numeric_layers, "'layer' must hold module names"),
    "unknown raw quantity": (_raw_unknown, "quantity 'weights' is not one of"),
    "raw dim of another layer": (_raw_foreign_dim, "'grad_bp__fc' has dim 'out__out'"),
    "raw without layer attr": (_raw_no_layer, "'update__fc' lacks the 'layer' attribute"),
    "probe dims": (_bad_probe, "'probe_input' has dims"),
    "combined without run dims": (
        _run_dims,
        r"'loss' has dims \('step',\), expected \('rule', 'step'\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_datasets_are_rejected_with_a_named_problem(case: str) -> None:
    break_it, message = CASES[case]
    ds = good()
    break_it(ds)
    with pytest.raises(SchemaError, match=message):
        validate(ds)


def test_segments_validate_without_run_attrs() -> None:
    ds = good()
    ds.attrs = {}
    with pytest.raises(SchemaError, match="attrs lack"):
        validate(ds)
    validate(ds, attrs=False)


def test_user_scalars_layer_coords_and_tags_follow_the_schema() -> None:
    from alignment.recording.schema import LAYER_COORDS, user_variable

    ds = good()
    name, var = user_variable("my_metric", "ms")
    assert name == "user_my_metric" and var.units == "ms"
    ds[name] = xr.Variable(var.dims, np.ones(3), var.attrs)
    ds = ds.assign_coords(layer_fan_in=("layer", [5, 3]), layer_type=("layer", ["Linear"] * 2))
    ds.attrs["tags"] = json.dumps({"wd": "burst", "width": 64})
    validate(ds)
    assert set(LAYER_COORDS) >= {"layer_type", "layer_fan_in", "layer_k", "layer_density"}
    wrong = ds.copy()
    wrong["user_my_metric"] = xr.Variable(("layer",), np.ones(2), var.attrs)
    with pytest.raises(SchemaError, match="user_my_metric"):
        validate(wrong)
    wrong = ds.copy()
    wrong["user_bad-name"] = xr.Variable(("step",), np.ones(3), var.attrs)
    with pytest.raises(SchemaError, match="unknown variable"):
        validate(wrong)
    wrong = ds.copy()
    wrong.attrs["tags"] = json.dumps({"wd": {"nested": 1}})
    with pytest.raises(SchemaError, match="tags"):
        validate(wrong)
    with pytest.raises(ValueError, match="identifier"):
        user_variable("2x")
