"""The Recorder in a user's own loop: default schedule for any run length, the final record at
close(), the few-records warning, rec.log for test accuracy and user scalars, tags, choosing
quantities, record_seconds and the layer coordinates."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignment
from alignment.metrics import angle
from alignment.recording import FewRecordsWarning, schedules, validate
from alignment.recording.quantities import SELECTABLE
from alignment.recording.schema import TIMINGS
from tests.test_recording_recorder import batches, build, conv_net


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def mlp(rule: str = "fa") -> nn.Module:
    torch.manual_seed(0)
    return alignment.convert(
        nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)), rule
    )


def loader(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 2, 4, generator=g), torch.randint(0, 4, (4,), generator=g))] * n


def fit(model, rec, data, opt, *, after=None) -> None:
    for i, (x, y) in enumerate(data):
        rec.step(x, y)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after is not None:
            after(i)


def test_default_schedule_records_a_short_run_densely_and_its_final_weights(tmp_path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough records: no FewRecordsWarning
        with alignment.Recorder(model, tmp_path, optimizer=opt) as rec:  # the README's lines
            fit(model, rec, loader(126), opt)
    ds = alignment.open_run(tmp_path)
    steps = ds["step"].values.tolist()
    assert steps == [0, 1, 2, 3, 4, 6, 10, 16, 25, 30, 40, 63, 95, 100, 126]
    assert repr(rec.schedule) == "log_spaced(per_decade=5) | every(200)"
    # the probe schedule: 0, 30, 95 and the final weights hold the per-sample probe quantities
    probed = ds["delta_alignment"].notnull().any(["layer", "sample"])
    assert ds["step"].values[probed.values].tolist() == [0, 30, 95, 126]
    assert ds["jacobian_alignment"].notnull().any(["layer", "sample"]).equals(probed)
    assert ds["delta_alignment"].attrs["schedule"] == "probe"
    # step 126 is the weights after the last update, with Jacobians (always at the final record)
    final = ds.sel(step=126)
    layer = model[3]
    expected = float(angle(layer.B.double(), layer.weight.detach().double()))
    assert float(final["feedback_alignment"].sel(layer="3")) == pytest.approx(expected, abs=1e-5)
    assert np.isfinite(final["jacobian_alignment"].values).any()
    x, y = loader(1)[0]
    with torch.no_grad():
        assert float(final["loss"]) == pytest.approx(float(F.cross_entropy(model(x), y)))
    assert schedules.log_spaced(per_decade=5).steps(10**5) != []


def test_no_extra_final_record_when_the_loop_already_recorded_the_final_weights(tmp_path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = loader(5)
    rec = alignment.Recorder(model, tmp_path, schedule=schedules.always, min_records=0)
    fit(model, rec, data, opt)
    rec.step(*data[0])  # the trainer's way: once more after training, no update after it
    rec.close()
    assert alignment.open_run(tmp_path)["step"].values.tolist() == [0, 1, 2, 3, 4, 5]
    rec = alignment.Recorder(model, tmp_path / "b", schedule=schedules.every(2), final=False)
    with pytest.warns(FewRecordsWarning):
        fit(model, rec, data, opt)
        rec.close()
    assert alignment.open_run(tmp_path / "b")["step"].values.tolist() == [0, 2, 4]


def test_leaving_a_with_block_on_an_exception_records_no_final_step(tmp_path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyError):
        with alignment.Recorder(model, tmp_path, schedule=schedules.every(2), min_records=0) as r:
            fit(model, r, loader(3), opt)
            raise KeyError("boom")
    assert alignment.open_run(tmp_path)["step"].values.tolist() == [0, 2]


def test_few_records_warn_with_the_schedule_and_the_fix(tmp_path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = alignment.Recorder(model, tmp_path, schedule=schedules.every(200))
    fit(model, rec, loader(30), opt)
    with pytest.warns(FewRecordsWarning, match=r"only 2 record\(s\) \(schedule every\(200\)") as w:
        rec.close()
    assert "min_records=0" in str(w[0].message) and "every(n)" in str(w[0].message)
    quiet = alignment.Recorder(model, tmp_path / "q", schedule=schedules.every(200), min_records=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(model, quiet, loader(3), opt)
        quiet.close()


def test_log_stores_test_accuracy_and_user_scalars(tmp_path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = loader(6)
    rec = alignment.Recorder(model, tmp_path, schedule=schedules.at([0]), min_records=0)

    def evaluate(i: int) -> None:
        if i == 2:  # after 3 updates: the weights of step 3
            rec.log(test_accuracy=0.5, my_metric=1.25, units={"my_metric": "ms"})
        if i == 3:
            rec.log(step=4, val_loss=0.75)

    fit(model, rec, data, opt, after=evaluate)
    rec.log(test_accuracy=0.75)  # after the loop: the final weights (step 6)
    rec.close()
    ds = validate(alignment.open_run(tmp_path))
    assert ds["step"].values.tolist() == [0, 3, 4, 6]
    np.testing.assert_array_equal(ds["test_accuracy"].values, [np.nan, 0.5, np.nan, 0.75])
    np.testing.assert_array_equal(ds["user_my_metric"].values, [np.nan, 1.25, np.nan, np.nan])
    assert ds["val_loss"].values[2] == 0.75
    assert ds["user_my_metric"].attrs["units"] == "ms"
    assert ds["user_my_metric"].attrs["long_name"] == "my_metric"
    assert np.isfinite(ds["grad_alignment"].values).all()  # every logged step: a full record
    with pytest.raises(ValueError, match="quantity the recorder computes"):
        rec2 = alignment.Recorder(model, tmp_path / "b", schedule=schedules.always, min_records=0)
        rec2.log(grad_alignment=1.0)
    with pytest.raises(ValueError, match="Python identifier"):
        rec2.log(**{"bad name": 1.0})
    rec2.step(*data[0], step=5)
    with pytest.raises(ValueError, match="not after the last recorded step 5"):
        rec2.log(step=4, test_loss=1.0)
    with pytest.raises(ValueError, match=r"rec\.log"):
        rec2.step(*data[0], my_metric=1.0)
    rec2.close()


def test_tags_are_stored_as_a_json_attr_and_checked(tmp_path) -> None:
    model = mlp()
    tags = {"wd": "burst", "width": 64, "lr_scale": 0.5}
    with alignment.Recorder(model, tmp_path, tags=tags, min_records=0) as rec:
        rec.step(*loader(1)[0])
    ds = alignment.open_run(tmp_path)
    assert json.loads(ds.attrs["tags"]) == tags
    untagged = alignment.Recorder(model, tmp_path / "b", probe=loader(1)[0])
    assert json.loads(untagged.attrs()["tags"]) == {}
    for bad, match in [
        ({"seed": 1}, "reserved"),
        ({"wd": [1, 2]}, "strings or numbers"),
        ({"my tag": 1}, "identifier"),
        ({"flag": True}, "strings or numbers"),
    ]:
        with pytest.raises(ValueError, match=match):
            alignment.Recorder(model, tmp_path / "c", tags=bad)
    broken = ds.copy()
    broken.attrs["tags"] = json.dumps({"seed": 3})
    with pytest.raises(alignment.recording.SchemaError, match="tags"):
        validate(broken)


def test_quantities_can_be_chosen_or_excluded(tmp_path) -> None:
    data = loader(1)[0]
    chosen = ["feedback_alignment", "loss"]
    with alignment.Recorder(
        mlp(), tmp_path / "a", quantities=chosen, schedule=schedules.always, min_records=0
    ) as rec:
        rec.step(*data)
    ds = alignment.open_run(tmp_path / "a")
    assert sorted(ds.data_vars) == sorted([*chosen, *TIMINGS, "probe_input", "probe_label"])
    assert json.loads(ds.attrs["quantities"]) == ["loss", "feedback_alignment"]
    jac = ["jacobian_alignment", "jacobian_sv_true", "jacobian_sv_fb"]
    with alignment.Recorder(mlp("pfa"), tmp_path / "b", exclude=jac, min_records=0) as rec:
        rec.step(*data)
    ds = alignment.open_run(tmp_path / "b")
    assert not set(jac) & set(ds.data_vars) and "bbt_eigenvalues" in ds
    with pytest.raises(ValueError, match=r"valid names: .*grad_alignment") as error:
        alignment.Recorder(mlp(), tmp_path / "c", quantities=["grad_angle"])
    assert "'grad_angle'" in str(error.value)
    with pytest.raises(ValueError, match="exclude names unknown"):
        alignment.Recorder(mlp(), tmp_path / "c", exclude=["nope"])
    assert "feedback_alignment_predicted" in SELECTABLE


def test_record_seconds_times_each_record(tmp_path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with alignment.Recorder(model, tmp_path, schedule=schedules.always, min_records=0) as rec:
        fit(model, rec, loader(3), opt)
    ds = alignment.open_run(tmp_path)
    seconds = ds["record_seconds"].values
    assert seconds.shape == (4,) and np.all(seconds > 0) and np.all(seconds < 60)
    assert ds["record_seconds"].attrs["units"] == "s"
    elapsed = ds["elapsed_seconds"].values  # the run's clock: rises, and holds the records
    assert np.all(np.diff(elapsed) > 0) and elapsed[-1] >= seconds.sum()


def test_elapsed_seconds_continue_across_a_resume(tmp_path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = alignment.Recorder(model, tmp_path, schedule=schedules.always, min_records=0)
    fit(model, rec, loader(3), opt)
    state = rec.state_dict()  # a checkpoint after 3 steps
    before = alignment.open_run(tmp_path)["elapsed_seconds"].values
    time.sleep(1.0)  # the process is stopped a while: that time is not the run's
    rec = alignment.Recorder(model, tmp_path, resume=True, schedule=schedules.always)
    rec.load_state_dict(state)
    fit(model, rec, loader(2), opt)  # steps 3 and 4
    rec.close()
    after = alignment.open_run(tmp_path)["elapsed_seconds"].values
    assert np.all(np.diff(after) > 0) and after[2] == before[2]
    assert after[3] - state["elapsed_seconds"] < 1.0  # resumed from the checkpoint's count


@pytest.mark.parametrize("rule", ["pfa", "fa"])
def test_layers_are_described_by_coordinates(tmp_path, rule: str) -> None:
    model = build(rule)  # conv(2→4, 3×3), conv(4→4, 3×3), linear(16→3); pfa with k = 2
    with alignment.Recorder(
        model, tmp_path, probe=batches(1)[0], schedule=schedules.always, min_records=0
    ) as rec:
        rec.step(*batches(1)[0])
    ds = alignment.open_run(tmp_path)
    assert ds["layer_type"].values.tolist() == ["Conv2d", "Conv2d", "Linear"]
    assert ds["layer_fan_in"].values.tolist() == [2, 4, 16]
    assert ds["layer_fan_out"].values.tolist() == [4, 4, 3]
    assert ds["layer_kernel_size"].values.tolist() == ["3×3", "3×3", ""]
    assert ds["layer_rule"].values.tolist() == [rule] * 3
    k = ds["layer_k"].values
    assert k.tolist() == [2.0] * 3 if rule == "pfa" else np.isnan(k).all()
    assert ds["layer_density"].values.tolist() == [1.0] * 3
    assert ds["layer_type"].dims == ("layer",)
    assert ds["layer_fan_in"].sel(layer="7") == 16  # selectable next to the module name
    assert math.isfinite(float(ds["feedback_alignment_predicted"].sel(layer="0").isel(step=0)))
    assert conv_net is not None
