"""The opt-in network-dynamics families: per-sample rule updates through torch.func for every
rule, the pooled layer outputs, the spectra, gradient SNR and per-sample angles against plain
formulas, opt-in selection, and the trainer's ``record.dynamics``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import alignment
from alignment.cli import main
from alignment.config import config_from_dict
from alignment.recording import open_run, per_sample, schedules, validate
from alignment.recording.context import Network, eval_mode
from alignment.recording.quantities import OPT_IN
from alignment.recording.schema import DYNAMICS
from tests.test_recording_recorder import batches, build, conv_net, record_everything, train
from tests.test_training import tiny

RULES = list(alignment.RULES)
DYNAMIC = sorted(OPT_IN)

pytestmark = pytest.mark.filterwarnings("ignore::alignment.recording.FewRecordsWarning")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    """Linear on a sequence (sample × 3 positions × 4), then a plain MLP head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 5), nn.Tanh(), nn.Flatten(), nn.Linear(15, 6), nn.Tanh(), nn.Linear(6, 3)
    ).double()


NETS = {"mlp": (mlp, (6, 3, 4)), "conv": (conv_net, (6, 2, 6, 6))}


def data(net: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = NETS[net][1]
    return torch.randn(*shape, generator=g, dtype=torch.float64), torch.randint(
        0, 3, (shape[0],), generator=g
    )


def converted(net: str, rule: str, seed: int = 0) -> nn.Module:
    base = NETS[net][0](seed)
    if net == "conv":  # BatchNorm statistics that are not the identity, for the eval-mode passes
        with torch.no_grad():
            base[1].running_mean.uniform_(-0.5, 0.5)
            base[1].running_var.uniform_(0.5, 2.0)
    return alignment.convert(base, rule, **({"k": 2} if rule == "pfa" else {}))


def eval_update(model: nn.Module, weights: list, x, y) -> list[torch.Tensor]:
    """The rule's update of each W on the batch (x, y), eval mode, by plain autograd."""
    with eval_mode(model):
        return list(torch.autograd.grad(F.cross_entropy(model(x), y), weights))


def record_once(model: nn.Module, run_dir: Path, probe, **kwargs):
    """One record of the untrained model at step 0 (probe schedule), read back."""
    options = {"probe": probe, "schedule": schedules.always, "jacobian_schedule": schedules.always}
    with alignment.Recorder(model, run_dir, **(options | kwargs)) as rec:
        rec.step(*probe)
    return open_run(run_dir).sel(step=0)


# ------------------------------------------------------------------ per-sample updates
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("net", list(NETS))
def test_per_sample_updates_sum_to_the_batch_update(net: str, rule: str) -> None:
    """n × the batch update (eval mode, plain autograd through the rule's backward) is the sum of
    the per-sample updates from torch.func.vmap; for a non-BP rule that is not BP's gradient."""
    model = converted(net, rule)
    x, y = data(net)
    network = Network(model, x)
    torch.manual_seed(3)  # brSF draws its feedback in the forward: the same draw in both
    updates = per_sample.per_sample_updates(network, x, y, F.cross_entropy)
    torch.manual_seed(3)
    weights = [layer.weight for layer in network.layers.values()]
    batch = eval_update(model, weights, x, y)
    assert list(updates) == network.names
    for name, update in zip(network.names, batch, strict=True):
        assert updates[name].shape == (x.shape[0], *update.shape)
        torch.testing.assert_close(
            updates[name].sum(0), update * x.shape[0], rtol=1e-10, atol=1e-14
        )
    bp = converted(net, "bp")
    first = eval_update(bp, [bp.get_submodule(network.names[0]).weight], x, y)[0]
    assert (rule == "bp") == torch.allclose(batch[0], first, rtol=1e-6, atol=0)


def test_per_sample_updates_leave_training_untouched(tmp_path) -> None:
    """brSF (random feedback) and DFA: recording every family keeps the run bitwise the same."""
    for rule in ("brsf", "dfa"):
        plain, recorded = build(rule), build(rule)
        probe = batches(1, seed=7)[0]
        torch.manual_seed(123)
        train(plain, batches(3))
        rng = torch.get_rng_state()
        torch.manual_seed(123)
        run = tmp_path / rule
        with record_everything(recorded, run, probe, dynamics=True, raw_layers=()) as rec:
            train(recorded, batches(3), rec)
        assert torch.equal(torch.get_rng_state(), rng)
        expected, got = plain.state_dict(), recorded.state_dict()
        assert list(expected) == list(got)
        for name, value in expected.items():
            assert torch.equal(value, got[name]), (rule, name)
        assert np.isfinite(open_run(run)["grad_snr"].values).all()


# ------------------------------------------------------------------ representations
def pooled_outputs(model: nn.Module, names: list[str], x) -> dict[str, np.ndarray]:
    """Each layer's output on x in eval mode by a forward hook, pooled over space/positions."""
    outputs = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda m, args, out, name=name: outputs.__setitem__(name, out.detach())
        )
        for name in names
    ]
    with torch.no_grad(), eval_mode(model):
        model(x)
    for hook in hooks:
        hook.remove()
    pooled = {}
    for name, out in outputs.items():
        if out.dim() == 4:  # conv: sample × C × H × W
            out = out.mean(dim=(2, 3))
        elif out.dim() == 3:  # sequence: sample × positions × F
            out = out.mean(dim=1)
        pooled[name] = out.numpy()
    return pooled


@pytest.mark.parametrize("net", list(NETS))
def test_activation_is_the_pooled_layer_output(tmp_path, net: str) -> None:
    model = converted(net, "fa")
    probe = data(net)
    ds = record_once(model, tmp_path / "all", probe, dynamics=["representations"])
    names = [str(v) for v in ds["layer"].values]
    expected = pooled_outputs(model, names, probe[0])
    act = ds["activation"]
    assert act.dims == ("layer", "sample", "unit") and act.attrs["schedule"] == "probe"
    assert act.sizes["unit"] == max(e.shape[1] for e in expected.values())
    for name in names:
        width = expected[name].shape[1]
        row = act.sel(layer=name).values
        np.testing.assert_allclose(row[:, :width], expected[name], rtol=1e-12, atol=1e-14)
        assert np.isnan(row[:, width:]).all()  # NaN-padded to the widest layer
    # a cap of 3 units keeps the units ⌊i·F/3⌋ of a wider layer
    capped = record_once(
        model, tmp_path / "capped", probe, dynamics=["representations"], max_features=3
    )["activation"]
    assert capped.sizes["unit"] == 3
    for name in names:
        width = expected[name].shape[1]
        keep = [i * width // 3 for i in range(3)] if width > 3 else list(range(width))
        np.testing.assert_allclose(
            capped.sel(layer=name).values[:, : len(keep)], expected[name][:, keep], rtol=1e-12
        )


# ------------------------------------------------------------------ spectra
def svdvals(t: torch.Tensor) -> np.ndarray:
    return torch.linalg.svdvals(t.detach().reshape(t.shape[0], -1)).numpy()


@pytest.mark.parametrize("rule", ["pfa", "dfa", "fa", "bp"])
def test_spectra_are_the_singular_values_of_w_and_the_feedback(tmp_path, rule: str) -> None:
    model = converted("conv", rule)
    probe = data("conv")
    ds = record_once(model, tmp_path, probe, dynamics=["spectra"])
    layers = dict(model.named_modules())
    for name in [str(v) for v in ds["layer"].values]:
        layer = layers[name]
        expected = {
            "weight_sv": svdvals(layer.weight),
            "feedback_sv": svdvals(layer.feedback_matrix()),
        }
        if rule == "pfa":
            b = layer.B
            bt_w = b.T @ layer.weight.detach().reshape(b.shape[0], -1)
            expected["feedback_target_sv"] = svdvals(b @ bt_w)
        else:
            assert np.isnan(ds["feedback_target_sv"].sel(layer=name).values).all()
        for variable, values in expected.items():  # from the Gram matrix: to ~1e-8 of σ_max
            row = ds[variable].sel(layer=name).values
            np.testing.assert_allclose(row[: len(values)], values, rtol=0, atol=1e-7 * values[0])
            assert np.isnan(row[len(values) :]).all()
    assert ds["weight_sv"].dims == ("layer", "rank")
    if rule == "dfa":  # D is C × (in·kh·kw): 3 singular values
        assert np.isfinite(ds["feedback_sv"].sel(layer="0").values).sum() == 3
    capped = record_once(model, tmp_path / "capped", probe, dynamics=["spectra"], max_rank=2)
    first = svdvals(layers["4"].weight)[:2]
    assert capped.sizes["rank"] == 2
    np.testing.assert_allclose(capped["weight_sv"].sel(layer="4").values, first, rtol=1e-7)


# ------------------------------------------------------------------ gradient noise
def loop_gradients(model: nn.Module, names: list[str], x, y) -> dict[str, np.ndarray]:
    """Per-sample updates of each W by a plain loop over the samples (eval mode, autograd)."""
    modules = dict(model.named_modules())
    weights = [modules[name].weight for name in names]
    rows = [eval_update(model, weights, x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    return {
        name: np.stack([row[j].reshape(-1).numpy() for row in rows]) for j, name in enumerate(names)
    }


@pytest.mark.parametrize(("net", "rule"), [("conv", "fa"), ("conv", "dfa"), ("mlp", "pfa")])
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_grad_snr_and_sample_angles_follow_their_formulas(
    tmp_path, monkeypatch, net: str, rule: str, chunk_bytes: int | None
) -> None:
    """Against per-sample gradients from a loop over the samples, the rule's and BP's; with
    chunk_bytes=1 the recorder takes the samples one at a time (the chunked spread)."""
    if chunk_bytes is not None:
        monkeypatch.setattr(per_sample, "CHUNK_BYTES", chunk_bytes)
    model, bp = converted(net, rule), converted(net, "bp")
    x, y = probe = data(net)
    ds = record_once(model, tmp_path, probe, dynamics=["gradient_noise"])
    names = [str(v) for v in ds["layer"].values]
    rule_grads, bp_grads = loop_gradients(model, names, x, y), loop_gradients(bp, names, x, y)
    n = len(x)
    for name in names:
        g = rule_grads[name]
        mean = g.mean(0)
        snr = (mean @ mean) / (((g - mean) ** 2).sum() / (n - 1))
        assert float(ds["grad_snr"].sel(layer=name)) == pytest.approx(snr, rel=1e-9)
        reference = bp_grads[name].mean(0)
        cos = g @ reference / (np.linalg.norm(g, axis=1) * np.linalg.norm(reference))
        angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        np.testing.assert_allclose(ds["sample_grad_angle"].sel(layer=name), angles, atol=1e-6)
    assert ds["sample_grad_angle"].attrs["units"] == "deg"
    assert np.isfinite(ds["sample_grad_angle"].values).all()


def test_a_resumed_record_keeps_its_caps(tmp_path) -> None:
    """The caps fix the widths of the unit and rank dims: a resume must use the record's own."""
    model, probe = converted("mlp", "fa"), data("mlp")
    rec = alignment.Recorder(model, tmp_path, probe=probe, dynamics=True, max_features=4)
    rec.step(*probe)
    state = rec.state_dict()
    assert open_run(tmp_path).attrs["max_features"] == 4
    with pytest.raises(ValueError, match=r"keeps max_features=4.*pass max_features=4"):
        alignment.Recorder(model, tmp_path, resume=True, dynamics=True)
    rec = alignment.Recorder(model, tmp_path, resume=True, dynamics=True, max_features=4)
    rec.load_state_dict(state)
    rec.step(*probe)
    rec.close()
    assert open_run(tmp_path).sizes["unit"] == 4


# ------------------------------------------------------------------ opt-in and the trainer
def test_the_families_are_opt_in_and_selectable(tmp_path) -> None:
    model, probe = converted("mlp", "pfa"), data("mlp")
    default = record_once(model, tmp_path / "default", probe)
    assert not set(DYNAMIC) & set(default.data_vars)
    assert not set(DYNAMIC) & set(json.loads(default.attrs["quantities"]))
    every = record_once(model, tmp_path / "every", probe, dynamics=True)
    assert set(DYNAMIC) <= set(every.data_vars)
    assert set(DYNAMIC) <= set(json.loads(every.attrs["quantities"]))
    one = record_once(model, tmp_path / "one", probe, dynamics=["spectra"], exclude=["feedback_sv"])
    assert {"weight_sv", "feedback_target_sv"} <= set(one.data_vars)
    assert not {"feedback_sv", "activation", "grad_snr"} & set(one.data_vars)
    named = record_once(model, tmp_path / "named", probe, quantities=["loss", "grad_snr"])
    assert {"loss", "grad_snr"} <= set(named.data_vars) and "sample_grad_angle" not in named
    for value in (True, ["gradient_noise"]):  # probe schedule only: NaN at the other records
        run = tmp_path / f"sparse{value is True}"
        with alignment.Recorder(
            model, run, probe=probe, jacobian_schedule=schedules.every(2), dynamics=value
        ) as rec:
            for _ in range(3):
                rec.step(*probe)
        snr = open_run(run)["grad_snr"]
        assert np.isfinite(snr.sel(step=[0, 2])).all() and np.isnan(snr.sel(step=1)).all()
    with pytest.raises(TypeError, match="list of family names"):
        alignment.Recorder(model, tmp_path / "x", dynamics="spectra")
    with pytest.raises(ValueError, match=r"unknown families 'spectrum'.*representations"):
        alignment.Recorder(model, tmp_path / "x", dynamics=["spectrum"])
    with pytest.raises(ValueError, match="max_rank"):
        alignment.Recorder(model, tmp_path / "x", max_rank=0)


def test_the_trainer_records_the_families_of_record_dynamics(tmp_path, capsys) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny(epochs=1, max_steps_per_epoch=3)))
    families = f"record.dynamics=[{','.join(DYNAMICS)}]"
    out = tmp_path / "run"
    args = ["train", str(config), "--out", str(out), "--quiet", "--seeds", "0"]
    assert main([*args, "--set", families]) == 0
    ds = validate(open_run(out / "seed0"))
    probed = ds["step"].values[ds["delta_alignment"].notnull().any(["layer", "sample"]).values]
    assert len(probed) >= 2
    for name in DYNAMIC:
        values = ds[name].sel(step=probed).values
        assert np.isfinite(values).any(), name
    assert np.isfinite(ds["grad_snr"].sel(step=probed).values).all()
    assert json.loads(ds.attrs["config"])["record"]["dynamics"] == list(DYNAMICS)
    capsys.readouterr()
    assert main([*args, "--set", "record.dynamics=[spectrum]"]) == 2
    error = capsys.readouterr().err  # refused when the config is read, naming file and key
    assert f"{config}: record.dynamics names unknown family 'spectrum'" in error
    assert "e.g. record.dynamics: [spectra]" in error
    assert math.isfinite(float(ds["loss"].isel(step=0)))


def test_the_config_key_defaults_to_no_family() -> None:
    assert config_from_dict(tiny()).record.dynamics == []
    assert config_from_dict(tiny(**{"record.dynamics": ["spectra"]})).record.dynamics == ["spectra"]
