"""Synthetic records for the analysis and figure tests, and a cached tiny trained run.

:func:`synthetic_run` builds one run (step × layer × sample …) with every variable of the schema,
realistic values for its rule (alignment settling where the paper says it does, test accuracy at
epoch starts, Jacobians on the sparser schedule, a residual that decays exactly by c_t) and all
run attrs; it passes :func:`alignment.recording.validate`. :func:`synthetic_runs` combines
several with :func:`alignment.analyses.combine`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from alignment.analyses import combine
from alignment.config import Config, config_from_dict
from alignment.recording.schema import RAW_QUANTITIES, VARIABLES, raw_name, validate
from alignment.theory import decay_factors
from alignment.training.schedules import learning_rate, weight_decay

LAYERS = ("fc1", "fc2", "fc3")
RULE_OPTIONS: dict[str, dict[str, Any]] = {
    "bp": {},
    "fa": {"density": 1.0},
    "dfa": {"density": 1.0},
    "usf": {"density": 1.0},
    "pfa": {"k": 10, "density": 1.0, "b_init": "random"},
    "pfa_o": {"k": 1, "density": 1.0, "b_init": "orthogonal"},
    "kp": {},
}
# (start, end) of feedback alignment per rule in degrees; the first FA layer stays near 90°.
ALIGNMENT = {
    "bp": (0.0, 0.0),
    "fa": (90.0, 55.0),
    "dfa": (90.0, 70.0),
    "usf": (30.0, 45.0),
    "pfa": (90.0, 19.0),
    "pfa_o": (90.0, 6.0),
    "kp": (90.0, 3.0),
}
FINAL_ACCURACY = {"bp": 0.98, "fa": 0.97, "dfa": 0.965, "usf": 0.972, "pfa": 0.981, "pfa_o": 0.982}


def synthetic_config(
    rule: str, *, data: str = "digits", model: str = "mlp", epochs: int = 4, **options: Any
) -> Config:
    """A valid config for the synthetic run (PFA-like rules get the paper's weight-decay burst)."""
    decays = rule in ("pfa", "pfa_o", "kp")
    raw = {
        "name": f"synthetic_{rule}",
        "model": {"name": model},
        "rule": {"name": rule, **options},
        "data": {"name": data, "batch_size": 32},
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.03 if decays else 1e-4},
        "lr_schedule": {"name": "multistep", "milestones": [epochs // 2], "gamma": 0.5},
        "wd_schedule": {"gamma": 0.003 if decays else 1.0, "burst_epochs": 1},
        "epochs": epochs,
        "record": {"every": 1, "jacobian": "epoch", "probe_size": 4},
    }
    return config_from_dict(raw)


def _var(name: str, values: np.ndarray) -> xr.Variable:
    return xr.Variable(VARIABLES[name].dims, values, VARIABLES[name].attrs)


def _curve(start: float, end: float, t: np.ndarray, rate: float = 4.0) -> np.ndarray:
    return end + (start - end) * np.exp(-rate * t)


def _schedules(config: Config, steps: np.ndarray, per_epoch: int) -> tuple[np.ndarray, ...]:
    lr = np.array(
        [
            learning_rate(config.optim.lr, config.lr_schedule, s // per_epoch, config.epochs)
            for s in steps
        ]
    )
    wd = np.array(
        [weight_decay(config.optim.weight_decay, config.wd_schedule, s, per_epoch) for s in steps]
    )
    return lr, wd


@functools.lru_cache(maxsize=32)
def _decay(config_json: str, n_steps: int, per_epoch: int) -> np.ndarray:
    """c_t at steps 0 … n_steps − 1 of a config (the same for every seed: cached)."""
    config = config_from_dict(json.loads(config_json))
    lr, wd = _schedules(config, np.arange(n_steps), per_epoch)
    return decay_factors(lr[:-1], wd[:-1], config.optim.momentum)


def synthetic_run(
    rule: str = "pfa",
    seed: int = 0,
    *,
    data: str = "digits",
    model: str = "mlp",
    epochs: int = 4,
    steps_per_epoch: int = 5,
    layers: Sequence[str] = LAYERS,
    samples: int = 4,
    sv: int = 5,
    options: dict[str, Any] | None = None,
    raw: bool = False,
    every: int = 1,
    features: int = 6,
    dynamics: bool = False,
) -> xr.Dataset:
    """One synthetic run that passes the schema check (see the module docstring). Records every
    ``every`` steps and at every epoch start, as the recorder does (``record.every``);
    ``features``: size of each probe input; ``dynamics``: with the network-dynamics variables
    (:func:`_dynamics`; the probe batch then depends on the seed only, as the trainer's does)."""
    options = dict(RULE_OPTIONS.get(rule, {}) if options is None else options)
    config = synthetic_config(rule, data=data, model=model, epochs=epochs, **options)
    rng = np.random.default_rng([seed, sum(map(ord, rule)), len(layers)])
    steps = np.arange(epochs * steps_per_epoch + 1)
    steps = steps[(steps % every == 0) | (steps % steps_per_epoch == 0)]
    epoch = steps // steps_per_epoch
    t = steps / steps[-1]
    n_layers = len(layers)
    start_epoch = steps % steps_per_epoch == 0
    lr, wd = _schedules(config, steps, steps_per_epoch)
    density = float(options.get("density", 1.0))
    final = FINAL_ACCURACY.get(rule, 0.95) - 0.03 * (1 - density) + 0.002 * rng.standard_normal()
    test = np.where(start_epoch, _curve(0.1, final, t, 6.0), np.nan)
    start, end = ALIGNMENT.get(rule, (90.0, 45.0))
    align = _curve(start, end, t)[:, None] + rng.normal(0, 1.0, (steps.size, n_layers))
    if rule == "fa":
        align[:, 0] = 90 + rng.normal(0, 0.5, steps.size)
    align[:, -1] = np.where(rule in ("bp", "dfa"), 0.0, align[:, -1] * 0.6)
    align = np.clip(align, 0, 180) if rule != "bp" else np.zeros_like(align)
    ratio = 1.0 + 0.05 * np.cos(np.radians(align)) + rng.normal(0, 0.01, align.shape)
    grad = np.clip(align * 0.8 + rng.normal(0, 2, align.shape), 0, 180)
    grad[:, -1] = 0.0
    if rule == "bp":
        grad[:] = 0.0
    per_sample = np.clip(
        grad[:, :, None] + rng.normal(0, 3, (steps.size, n_layers, samples)), 0, 180
    )
    per_sample[:, -1] = 0.0
    if rule == "bp":
        per_sample[:] = 0.0
    jac = np.where(start_epoch[:, None, None], per_sample, np.nan)
    sv_true = np.sort(rng.uniform(0.2, 2.0, (steps.size, n_layers, sv)), axis=-1)[..., ::-1]
    sv_fb = sv_true * (1.0 if rule == "bp" else rng.uniform(0.5, 1.5, (1, n_layers, 1)))
    sv_true = np.where(start_epoch[:, None, None], sv_true, np.nan)
    sv_fb = np.where(start_epoch[:, None, None], sv_fb, np.nan)
    residual = np.full((steps.size, n_layers), np.nan)
    bbt = np.full((n_layers, 8), np.nan)
    if rule in ("pfa", "pfa_o", "kp"):
        c = _decay(config.to_json(), int(steps[-1]) + 1, steps_per_epoch)[steps]
        residual = c[:, None] * rng.uniform(5, 40, n_layers)[None, :]
    if rule in ("pfa", "pfa_o"):
        k = float(options.get("k", 10))
        bbt = np.sort(1 + rng.normal(0, 1 / np.sqrt(k) if rule == "pfa" else 0, (n_layers, 8)), -1)
    loss = _curve(2.3, 0.1, t) + 0.02 * rng.standard_normal(steps.size)
    ds = xr.Dataset(
        {
            "loss": _var("loss", loss),
            "train_accuracy": _var("train_accuracy", np.clip(1 - loss / 2.5, 0, 1)),
            "test_accuracy": _var("test_accuracy", test),
            "test_loss": _var("test_loss", np.where(start_epoch, loss, np.nan)),
            "lr": _var("lr", lr),
            "weight_decay": _var("weight_decay", wd),
            "feedback_alignment": _var("feedback_alignment", align),
            "feedback_norm_ratio": _var("feedback_norm_ratio", ratio),
            "grad_alignment": _var("grad_alignment", grad),
            "grad_norm": _var("grad_norm", np.abs(rng.normal(1, 0.1, align.shape))),
            "grad_bp_norm": _var("grad_bp_norm", np.abs(rng.normal(1, 0.1, align.shape))),
            "delta_alignment": _var("delta_alignment", per_sample),
            "jacobian_alignment": _var("jacobian_alignment", jac),
            "jacobian_sv_true": _var("jacobian_sv_true", sv_true),
            "jacobian_sv_fb": _var("jacobian_sv_fb", sv_fb),
            "feedback_residual": _var("feedback_residual", residual),
            "feedback_residual_rel": _var("feedback_residual_rel", residual / 10.0),
            "bbt_eigenvalues": _var("bbt_eigenvalues", bbt),
            "probe_label": _var("probe_label", np.arange(samples) % 10),
            "probe_input": xr.Variable(
                ("sample", "feature"),
                rng.normal(size=(samples, features)),
                VARIABLES["probe_label"].attrs,
            ),
        },
        coords={"step": steps, "epoch": ("step", epoch), "layer": list(layers)},
        attrs={
            "config": config.to_json(),
            "rule": rule,
            "rule_options": json.dumps(options, sort_keys=True),
            "seed": seed,
            "alignment_version": "0.1.0",
            "torch_version": "synthetic",
            "python_version": "synthetic",
            "git_sha": "0" * 40,
            "start_time": "2024-01-01T00:00:00+00:00",
            "steps_per_epoch": steps_per_epoch,
        },
    )
    if raw:
        ds = ds.merge(_raw(rng, layers, epochs, steps_per_epoch, samples), combine_attrs="override")
    if dynamics:
        ds = ds.drop_vars("probe_input").merge(
            _dynamics(rule, seed, ds, grad, samples, features), combine_attrs="override"
        )
    return validate(ds)


# ------------------------------------------------------------------------------ dynamics
# How close each rule's representations come to BP's at the end (the mix of BP's), the exponent
# of its weight spectrum at the end, and its gradient SNR relative to BP's.
SIMILARITY = {"bp": 1.0, "fa": 0.55, "dfa": 0.45, "usf": 0.8, "pfa": 0.9, "pfa_o": 0.95, "kp": 0.95}
FINAL_ALPHA = {"bp": 2.5, "fa": 3.5, "dfa": 4.0, "usf": 3.0, "pfa": 2.8, "pfa_o": 2.6, "kp": 2.6}
SNR = {"bp": 2.0, "fa": 0.8, "dfa": 0.6, "usf": 1.4, "pfa": 1.6, "pfa_o": 1.8, "kp": 1.8}
HIDDEN_RANK = 40
"""Singular values of a hidden layer (the last layer has 3): enough for a power-law fit."""


def _dynamics(
    rule: str, seed: int, ds: xr.Dataset, grad: np.ndarray, samples: int, features: int
) -> xr.Dataset:
    """``activation``, ``weight_sv``, ``feedback_sv``, ``feedback_target_sv``, ``grad_snr`` and
    ``sample_grad_angle`` on the probe schedule (epoch starts): representations that move
    towards BP's (the same for every rule at a seed) by :data:`SIMILARITY`, weight spectra with a
    power-law tail whose exponent falls from 6 to :data:`FINAL_ALPHA`, an SNR that falls as the
    loss does. The probe batch is drawn from the seed alone."""
    layers = [str(la) for la in ds["layer"].values]
    steps = ds["step"].values
    probe = np.asarray(ds["epoch"].values)[:, None] >= 0
    probe = (steps % int(ds.attrs["steps_per_epoch"]) == 0)[:, None]
    t = steps / steps[-1]
    shared = np.random.default_rng([seed, 15])
    rng = np.random.default_rng([seed, sum(map(ord, rule)), 15])
    n_layers = len(layers)
    widths = [max(3, 8 - 2 * i) if i < n_layers - 1 else 3 for i in range(n_layers)]
    activation = np.full((steps.size, n_layers, samples, max(widths)), np.nan)
    mix = SIMILARITY.get(rule, 0.5) * (1 - np.exp(-4 * t)) if rule != "bp" else np.ones_like(t)
    for i, width in enumerate(widths):
        target = shared.normal(size=(samples, width))
        noise = rng.normal(size=(steps.size, samples, width))
        activation[:, i, :, :width] = (
            mix[:, None, None] * target + (1 - mix[:, None, None]) * noise
        ) * (1 + t[:, None, None])
    ranks = [HIDDEN_RANK if i < n_layers - 1 else 3 for i in range(n_layers)]
    alpha = 6.0 + (FINAL_ALPHA.get(rule, 3.0) - 6.0) * (1 - np.exp(-4 * t))
    uniform = rng.random((n_layers, HIDDEN_RANK))
    weight_sv = np.full((steps.size, n_layers, HIDDEN_RANK), np.nan)
    for i, rank in enumerate(ranks):
        pareto = (1 - uniform[i, :rank])[None, :] ** (-1 / (alpha[:, None] - 1))
        weight_sv[:, i, :rank] = -np.sort(-np.sqrt(pareto), axis=-1)
    fixed = np.sort(rng.uniform(0.5, 1.5, (1, n_layers, HIDDEN_RANK)), -1)[..., ::-1]
    fixed = np.where(np.isnan(weight_sv[:1]), np.nan, fixed)
    feedback_sv = {
        "bp": weight_sv,
        "fa": np.broadcast_to(fixed, weight_sv.shape),
        "dfa": np.broadcast_to(fixed, weight_sv.shape),
    }.get(rule, weight_sv * (1 + (1 - mix)[:, None, None]))
    target_sv = np.full_like(weight_sv, np.nan)
    if rule in ("pfa", "pfa_o"):
        target_sv = weight_sv * (1.05 if rule == "pfa" else 1.0)
    snr = SNR.get(rule, 1.0) * (0.3 + np.exp(-2 * t))[:, None] * rng.uniform(0.8, 1.2, n_layers)
    spread = 25 - 10 * t[:, None, None]
    angle = np.clip(
        grad[:, :, None] + 20 + spread * np.abs(rng.normal(size=(*grad.shape, samples))), 0, 180
    )

    def on_probe(values: np.ndarray) -> np.ndarray:
        mask = probe.reshape((-1,) + (1,) * (values.ndim - 1))
        return np.where(mask, values, np.nan)

    return xr.Dataset(
        {
            "activation": _var("activation", on_probe(activation)),
            "weight_sv": _var("weight_sv", on_probe(weight_sv)),
            "feedback_sv": _var("feedback_sv", on_probe(np.asarray(feedback_sv))),
            "feedback_target_sv": _var("feedback_target_sv", on_probe(target_sv)),
            "grad_snr": _var("grad_snr", on_probe(snr)),
            "sample_grad_angle": _var("sample_grad_angle", on_probe(angle)),
            "probe_input": xr.Variable(
                ("sample", "channel", "height", "width"),
                np.random.default_rng([seed, 16]).normal(size=(samples, 1, 1, features)),
                VARIABLES["probe_label"].attrs,
            ),
        },
        coords={"step": steps, "layer": layers},
    )


def _raw(
    rng: np.random.Generator, layers: Sequence[str], epochs: int, per_epoch: int, samples: int
) -> xr.Dataset:
    raw_steps = np.arange(epochs + 1) * per_epoch
    data = {}
    for i, layer in enumerate(layers):
        shape = (3 if i == len(layers) - 1 else 6, 6)
        drift = np.cumsum(rng.normal(size=(raw_steps.size, *shape)), axis=0)
        for quantity in ("update", "grad_bp", "feedback"):
            data[raw_name(quantity, layer)] = xr.Variable(
                ("raw_step", f"{layer}__out", f"{layer}__in"),
                drift + 0.1 * rng.normal(size=drift.shape),
                RAW_QUANTITIES[quantity].attrs(layer),
            )
    return xr.Dataset(
        data, coords={"raw_step": raw_steps, "raw_epoch": ("raw_step", np.arange(epochs + 1))}
    )


def synthetic_runs(
    rules: Sequence[str] = ("bp", "fa", "dfa", "usf", "pfa", "pfa_o"),
    seeds: Sequence[int] = (0, 1),
    *,
    densities: Sequence[float] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Several synthetic runs combined along rule × seed (× density when ``densities``: every
    rule but BP at each density)."""
    runs = []
    for rule in rules:
        for seed in seeds:
            if densities is None or rule == "bp":
                runs.append(synthetic_run(rule, seed, **kwargs))
                continue
            for density in densities:
                options = {**RULE_OPTIONS[rule], "density": float(density)}
                runs.append(synthetic_run(rule, seed, options=options, **kwargs))
    return combine(runs)


# ------------------------------------------------------------------------------ records on disk
STATIC_VARIABLES = ("probe_input", "probe_label", "bbt_eigenvalues")


def write_run(
    ds: xr.Dataset, run_dir: str | os.PathLike, *, flushes: int = 1, compact: bool = True
) -> Path:
    """Write a synthetic run (:func:`synthetic_run`) as a real record, the way the trainer and
    the recorder do: ``config.yaml`` and ``record.zarr`` with the static part, the step records in
    ``flushes`` segments (raw records in one), compacted as ``Recorder.close`` does unless
    ``compact=False``. :func:`alignment.open_run` reads ``ds`` back."""
    import yaml

    from alignment.recording.store import SegmentStore

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads(ds.attrs["config"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "seeds": [ds.attrs["seed"]]}))
    store = SegmentStore(run_dir)
    store.create()
    layer = np.array([str(v) for v in ds["layer"].values], dtype=object)
    static = xr.Dataset(
        {n: ds[n].variable for n in STATIC_VARIABLES if n in ds},
        coords={"layer": layer},
        attrs=ds.attrs,
    )
    store.write_static(static)
    main = xr.Dataset(
        {n: v.variable for n, v in ds.data_vars.items() if "step" in v.dims},
        coords={"step": ds["step"].values, "epoch": ds["epoch"].variable, "layer": layer},
    )
    for part in np.array_split(np.arange(ds.sizes["step"]), flushes):
        store.append("main", main.isel(step=part))
    raw = [n for n, v in ds.data_vars.items() if "raw_step" in v.dims]
    if raw:
        store.append("raw", ds[raw].drop_vars("layer", errors="ignore"))
    if compact:
        for kind in ("main", "raw"):
            store.compact(kind)
    return run_dir


# ------------------------------------------------------------------------------ a real tiny run
TINY_RUN = {
    "name": "tiny",
    "model": {"name": "mlp"},
    "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 500},
    "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.02},
    "wd_schedule": {"gamma": 0.1, "burst_steps": 4},
    "lr_schedule": {"name": "multistep", "milestones": [1], "gamma": 0.5},
    "epochs": 2,
    "max_steps_per_epoch": 4,
    "record": {"every": 1, "jacobian": "epoch", "probe_size": 4, "flush_every": 4},
}
_TINY_RUNS: dict[str, Path] = {}


def tiny_runs(factory: pytest.TempPathFactory) -> Path:
    """A folder with two real tiny runs in the demo layout, ``<rule>/seed0`` for BP and PFA
    (k = 2), trained once per test session on scikit-learn's digits (a few seconds)."""
    if "root" not in _TINY_RUNS:
        import torch

        from alignment.training import train

        root = factory.mktemp("tiny_runs")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for rule, options in (("bp", {}), ("pfa", {"k": 2})):
                config = config_from_dict({**TINY_RUN, "rule": {"name": rule, **options}})
                train(config, root / rule, quiet=True)
        finally:
            torch.set_num_threads(threads)
        _TINY_RUNS["root"] = root
    return _TINY_RUNS["root"]
