"""The schema of a recorded run: dimension names, variables, their units, and a validator.

Every Dataset the recorder writes, every Dataset an analysis or a figure reads, and the synthetic
Datasets of the tests pass :func:`validate`. Dims are singular snake_case names; ``epoch`` is a
coordinate on ``step``; every data variable carries ``long_name``, ``units`` and ``description``,
and the recorder's variables also ``schedule``: which records hold it (:data:`MAIN`,
:data:`PROBE`, :data:`ONCE`, :data:`LOOP`, see :data:`SCHEDULES`). The probe schedule
(``Recorder(jacobian_schedule=...)``, sparser) records what needs per-sample passes over the
probe batch: ``delta_alignment``, the Jacobian quantities and, for DFA layers,
``feedback_alignment`` and ``feedback_norm_ratio`` (their probe-mean true Jacobian); these are
NaN at the other steps. So are the opt-in network-dynamics families (:data:`DYNAMICS`):
``representations`` (``activation``, dim ``unit``), ``spectra`` (``weight_sv``, ``feedback_sv``,
``feedback_target_sv``, dim ``rank``) and ``gradient_noise`` (``grad_snr``,
``sample_grad_angle``), recorded only when asked for.

Raw tensors (opt-in per layer) live on their own dim ``raw_step`` (coordinate ``raw_epoch``), one
variable per layer named ``<quantity>__<layer>`` (:data:`RAW_QUANTITIES`), with that layer's own
dims: ``<layer>__out``, ``<layer>__in``, ``<layer>__kh``, ``<layer>__kw`` for weight-shaped tensors,
``sample``, ``logit`` and ``<layer>__out`` (conv: plus ``<layer>__height``, ``<layer>__width``) for
Jacobians; each raw variable carries a ``layer`` attribute.

Layers with sequence positions (attention projections and the MLP of a transformer see (batch,
tokens, features)): the per-sample quantities pool the positions, they are not per position. δ of
sample n is its whole (tokens × features) output error, flattened, so ``delta_alignment`` is one
angle per sample over all its positions; the Jacobians are C × (tokens·features) per sample, so
``jacobian_alignment`` and the singular values are per sample as well, and the raw Jacobians keep
the positions as ``<layer>__pos0`` (before ``<layer>__out``). W-shaped quantities (``grad_*``,
``feedback_*``) sum over positions, as grad_W = Σ_positions δᵀx does.

Datasets that combine runs (:func:`alignment.open_runs`) list the dims they added in front of every
variable's dims in the JSON attr ``run_dims`` (e.g. ``["rule", "seed"]``).

The ``layer`` dim carries coordinates that describe each layer (:data:`LAYER_COORDS`): its module
type, fan-in and fan-out, kernel size, rule and the rule's per-layer options ``k`` and
``density`` (NaN or "" where they do not apply).

User scalars (:meth:`alignment.Recorder.log` with a name that is not a schema variable) are stored
as network-level variables named ``user_<name>`` (dims ``("step",)``; ``<name>`` a Python
identifier), with ``long_name`` = ``<name>``, the units given to ``log`` (default "1") and a
description saying it was logged by the training loop.

Run attrs (:data:`REQUIRED_ATTRS`, plus optional ones): ``tags`` is a JSON object of the user's
own factors, a flat mapping from identifier to string or number (``Recorder(tags={"wd": "burst"})``
→ ``'{"wd": "burst"}'``; ``"{}"`` when none); ``quantities`` the JSON list of the variables the
recorder computes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import xarray as xr

DEG = "deg"


MAIN, PROBE, ONCE, LOOP = "main", "probe", "once", "loop"
"""Which records hold a variable (its attr ``schedule``): ``main`` every record of the main
schedule; ``probe`` only the records of the probe schedule (``Recorder(jacobian_schedule=...)``,
NaN at the others); ``once`` the static part (no step dim); ``loop`` the steps at which the
training loop passed or logged it."""
MAIN_DFA_PROBE = "main (DFA layers: probe)"


@dataclass(frozen=True)
class Variable:
    dims: tuple[str, ...]
    long_name: str
    units: str
    description: str
    schedule: str = ""
    """:data:`MAIN`, :data:`PROBE`, :data:`ONCE`, :data:`LOOP` or :data:`MAIN_DFA_PROBE`."""

    @property
    def attrs(self) -> dict[str, str]:
        attrs = {"long_name": self.long_name, "units": self.units, "description": self.description}
        return attrs | ({"schedule": self.schedule} if self.schedule else {})


STEP, LAYER = ("step",), ("step", "layer")

MAX_FEATURES = 256
"""Default cap on the units per layer in ``activation`` (``Recorder(max_features=...)``)."""
MAX_RANK = 256
"""Default cap on the singular values per layer in the spectra (``Recorder(max_rank=...)``)."""

DYNAMICS: dict[str, tuple[str, ...]] = {
    "representations": ("activation",),
    "spectra": ("weight_sv", "feedback_sv", "feedback_target_sv"),
    "gradient_noise": ("grad_snr", "sample_grad_angle"),
}
"""The opt-in families of network-dynamics variables (``Recorder(dynamics=[...])``, config
``record.dynamics``), all on the probe schedule; a recorder computes none of them by default."""

VARIABLES: dict[str, Variable] = {
    # network level
    "loss": Variable(STEP, "training loss", "nat", "Loss of the recorded training batch."),
    "train_accuracy": Variable(STEP, "train accuracy", "1", "Fraction correct, training batch."),
    "test_accuracy": Variable(STEP, "test accuracy", "1", "Fraction correct on the test set."),
    "test_loss": Variable(STEP, "test loss", "nat", "Loss on the test set."),
    "val_accuracy": Variable(STEP, "validation accuracy", "1", "Fraction correct, validation."),
    "val_loss": Variable(STEP, "validation loss", "nat", "Loss on the validation set."),
    "record_seconds": Variable(
        STEP,
        "record time",
        "s",
        "Wall-clock time the recorder spent computing this record (its passes and quantities, "
        "not the write to disk); compare with the time of a training step for the overhead.",
    ),
    "elapsed_seconds": Variable(
        STEP,
        "elapsed time",
        "s",
        "Wall-clock time of the run up to the end of this record, from the recorder's first "
        "step (training, evaluation and recording; a resumed run continues its checkpoint's "
        "count, without the time it was stopped). With record_seconds it gives the recording "
        "overhead (alignment info).",
    ),
    "lr": Variable(STEP, "learning rate", "1", "Learning rate of the first parameter group."),
    "weight_decay": Variable(STEP, "weight decay", "1", "Coupled L2 coefficient (first group)."),
    # per layer
    "feedback_alignment": Variable(
        LAYER,
        "feedback alignment",
        DEG,
        "angle(feedback_matrix(), W): weight alignment (FA, sign symmetry, KP), path alignment "
        "angle(B·R, W) (PFA); 0 for BP. DFA: angle between the feedback map from e_out to the "
        "layer input and the true logits-to-layer-input Jacobian averaged over the probe batch.",
    ),
    "feedback_norm_ratio": Variable(
        LAYER, "feedback norm ratio", "1", "‖feedback‖/‖W‖ (DFA: ‖feedback map‖/‖mean Jacobian‖)."
    ),
    "grad_alignment": Variable(
        LAYER,
        "gradient alignment",
        DEG,
        "angle between the rule's update for W and the true BP gradient of the same loss, at the "
        "same weights, on the same batch.",
    ),
    "grad_norm": Variable(LAYER, "rule update norm", "1", "‖grad_W‖ under the rule."),
    "grad_bp_norm": Variable(LAYER, "BP gradient norm", "1", "‖grad_W‖ under BP."),
    "delta_alignment": Variable(
        ("step", "layer", "sample"),
        "error-signal alignment",
        DEG,
        "Per probe sample: angle between the error δ the rule delivers to the layer output and "
        "the one BP would deliver (over all the sample's positions at once).",
    ),
    "jacobian_alignment": Variable(
        ("step", "layer", "sample"),
        "Jacobian alignment",
        DEG,
        "Per probe sample: angle between the true Jacobian of the logits w.r.t. the layer output "
        "and the feedback Jacobian (the map the rule uses to send output errors to that layer), "
        "over all the sample's positions at once.",
    ),
    "jacobian_sv_true": Variable(
        ("step", "layer", "sv"),
        "true Jacobian singular values",
        "1",
        "Singular values of the true logits-to-layer-output Jacobian of each probe sample "
        "(descending), averaged over the probe batch; NaN-padded.",
    ),
    "jacobian_sv_fb": Variable(
        ("step", "layer", "sv"),
        "feedback Jacobian singular values",
        "1",
        "Singular values of the feedback Jacobian of each probe sample (descending), averaged "
        "over the probe batch; NaN-padded.",
    ),
    "feedback_alignment_predicted": Variable(
        LAYER,
        "predicted feedback alignment",
        DEG,
        "The theory's angle between the realised feedback and W. PFA, PFA-o: the expected angle "
        "between W and B·(P⊙BᵀW) at the weight-decay fixed point R* = P⊙BᵀW, for the realised B "
        "(its B·Bᵀ spectrum: cos θ = mean λ/√(mean λ²) when dense) and W with i.i.d. entries "
        "(alignment.theory.realised_path_alignment); FA: 90° (B independent of W); uSF: the "
        "angle between W and sign(W) for the current W (exact when dense); frSF/brSF: the same "
        "with |B| uniform; BP: 0°. NaN where there is no prediction (DFA, KP).",
    ),
    "feedback_norm_ratio_predicted": Variable(
        LAYER,
        "predicted feedback norm ratio",
        "1",
        "The theory's ‖feedback‖/‖W‖: PFA, PFA-o the expected √(E‖B(P⊙BᵀW)‖²/E‖W‖²) at the "
        "fixed point for the realised B; uSF s·√(ρ·numel)/‖W‖ for the current W; BP 1; NaN "
        "otherwise.",
    ),
    "feedback_residual": Variable(
        LAYER, "feedback residual", "1", "PFA: ‖R − BᵀW‖; KP: ‖B − W‖ (Frobenius). NaN otherwise."
    ),
    "feedback_residual_rel": Variable(
        LAYER, "relative feedback residual", "1", "PFA: ‖R − BᵀW‖/‖BᵀW‖; KP: ‖B − W‖/‖W‖."
    ),
    "feedback_residual_predicted": Variable(
        STEP,
        "predicted residual factor c_t",
        "1",
        "The factor c_t by which SGD with coupled L2 (the same lr, momentum and weight decay on "
        "W and on R; KP: on W and B) shrinks R − BᵀW (KP: B − W) over the updates between the "
        "reference step (the first the recorder saw, usually 0; c = 1 there) and this record: "
        "feedback_residual / its value at the reference = c_t in every PFA and KP layer. "
        "Computed by the recorder from the optimizer's lr, momentum and weight decay at every "
        "update (alignment.theory.decay_step). NaN where the identity does not hold or the "
        "recursion cannot know its state: no optimizer or not torch.optim.SGD, tracked tensors "
        "in groups with different settings or without gradients, masked (sparse) learned "
        "feedback, momentum buffers older than the recorder, a record continued without the "
        "checkpoint's recorder state. Recorded with feedback_residual (PFA, PFA-o, KP).",
    ),
    # network dynamics (opt-in: Recorder(dynamics=...), see DYNAMICS)
    "activation": Variable(
        ("step", "layer", "sample", "unit"),
        "layer output",
        "1",
        "Each converted layer's output y on the probe batch (before any following "
        "nonlinearity), from the rule's eval-mode probe pass, pooled by a mean over every dim "
        "but the sample and the feature dim (conv: over height × width; outputs (batch, …, F): "
        "over the middle positions). At most max_features units per layer (default "
        f"{MAX_FEATURES}): a wider layer keeps the evenly spaced units ⌊i·F/m⌋, i = 0…m−1 "
        "(F its width, m = max_features). NaN-padded to the widest layer.",
    ),
    "weight_sv": Variable(
        ("step", "layer", "rank"),
        "singular values of W",
        "1",
        "Singular values of W reshaped to out × (in·kh·kw), descending; the largest max_rank "
        f"kept (default {MAX_RANK}), NaN-padded.",
    ),
    "feedback_sv": Variable(
        ("step", "layer", "rank"),
        "singular values of the feedback",
        "1",
        "Singular values of feedback_matrix() reshaped to rows × rest (FA, KP: B; PFA: B·R; "
        "sign symmetry: its sign matrix; BP: W; DFA: D, C × (in·kh·kw)), descending; the "
        "largest max_rank kept, NaN-padded.",
    ),
    "feedback_target_sv": Variable(
        ("step", "layer", "rank"),
        "singular values of B·(BᵀW)",
        "1",
        "PFA, PFA-o: singular values of B·(M⊙BᵀW), W reshaped to out × (in·kh·kw) and M the "
        "mask of R (all ones when dense): the feedback B·R would be at the weight-decay fixed "
        "point R* = M⊙BᵀW that R's update Bᵀ·grad_W drives it to (arXiv 2405.20594, §3); "
        "compare with feedback_sv. Descending, the largest max_rank kept, NaN-padded; NaN for "
        "other rules.",
    ),
    "grad_snr": Variable(
        LAYER,
        "gradient signal-to-noise ratio",
        "1",
        "‖ḡ‖² / ((1/(n−1)) Σᵢ ‖gᵢ − ḡ‖²) over the n probe samples, gᵢ the rule's update of W "
        "for sample i alone (torch.func.vmap of the gradient through the rule's backward, "
        "eval mode as every probe pass, so BatchNorm on its running statistics) and ḡ their "
        "mean. NaN when n < 2 or every gᵢ is equal.",
    ),
    "sample_grad_angle": Variable(
        ("step", "layer", "sample"),
        "per-sample update angle to BP",
        DEG,
        "Per probe sample i: angle between the rule's update of W for sample i alone (as in "
        "grad_snr) and the BP gradient of W on the whole probe batch (eval mode; the mean of "
        "the per-sample BP gradients).",
    ),
    # once per run
    "bbt_eigenvalues": Variable(
        ("layer", "eig"), "eigenvalues of B·Bᵀ", "1", "PFA only; ascending, NaN-padded."
    ),
    "probe_label": Variable(("sample",), "probe label", "1", "Labels of the fixed probe batch."),
}

SCHEDULES = {
    **dict.fromkeys(("test_accuracy", "test_loss", "val_accuracy", "val_loss"), LOOP),
    **dict.fromkeys(
        ("delta_alignment", "jacobian_alignment", "jacobian_sv_true", "jacobian_sv_fb"), PROBE
    ),
    **dict.fromkeys((name for names in DYNAMICS.values() for name in names), PROBE),
    **dict.fromkeys(("feedback_alignment", "feedback_norm_ratio"), MAIN_DFA_PROBE),
    **dict.fromkeys(("bbt_eigenvalues", "probe_label"), ONCE),
}
"""Each variable's schedule (:data:`MAIN` where not listed)."""
VARIABLES = {
    name: replace(var, schedule=SCHEDULES.get(name, MAIN)) for name, var in VARIABLES.items()
}

TIMINGS = ("record_seconds", "elapsed_seconds")
"""Wall-clock variables: the only ones in which two runs with the same seed differ."""

PROBE_INPUT_DIMS = {
    2: ("sample", "feature"),
    3: ("sample", "position", "feature"),
    4: ("sample", "channel", "height", "width"),
}
PROBE_INPUT = Variable(
    ("sample",), "probe input", "1", "Inputs of the fixed probe batch.", schedule=ONCE
)

REQUIRED_ATTRS = (
    "config",
    "rule",
    "rule_options",
    "seed",
    "alignment_version",
    "torch_version",
    "python_version",
    "git_sha",
    "start_time",
)
ANGLES = tuple(name for name, v in VARIABLES.items() if v.units == DEG)

LAYER_COORDS: dict[str, Variable] = {
    "layer_type": Variable(
        ("layer",), "module type", "", "Class name of the converted module (Linear, Conv2d, …)."
    ),
    "layer_fan_in": Variable(
        ("layer",), "fan-in", "1", "Input features (Linear) or input channels (Conv)."
    ),
    "layer_fan_out": Variable(
        ("layer",), "fan-out", "1", "Output features (Linear) or output channels (Conv)."
    ),
    "layer_kernel_size": Variable(
        ("layer",), "kernel size", "", "Kernel size of a conv layer as 'kh×kw'; '' for Linear."
    ),
    "layer_rule": Variable(("layer",), "rule", "", "The layer's learning rule."),
    "layer_k": Variable(
        ("layer",), "expansion ratio k", "1", "The rule's option k (PFA); NaN for other rules."
    ),
    "layer_density": Variable(
        ("layer",), "feedback density", "1", "The rule's option density; NaN if it has none."
    ),
}
"""Coordinates on the ``layer`` dim that describe each layer (written by the recorder)."""

USER_PREFIX = "user_"
"""Prefix of the variables holding user scalars (:meth:`alignment.Recorder.log`)."""

RESERVED_TAGS = frozenset(
    {"rule", "seed", "run", "step", "epoch", "layer", "sample", "sv", "eig", "unit", "rank"}
)
"""Tag names that would collide with a factor or a dim of combined runs."""


def user_variable(name: str, units: str = "1") -> tuple[str, Variable]:
    """The stored name and schema entry of user scalar ``name`` (a Python identifier)."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(
            f"user scalar name {name!r} must be a Python identifier not starting with '_'"
        )
    return f"{USER_PREFIX}{name}", Variable(
        STEP,
        name,
        units or "1",
        f"User scalar {name!r}, logged by the training loop.",
        schedule=LOOP,
    )


def check_tags(tags: object) -> dict[str, str | int | float]:
    """``tags`` as a validated flat dict of identifier → str/number; raises ValueError."""
    if not isinstance(tags, dict):
        raise ValueError(f"tags must be a dict of name → str or number, got {type(tags).__name__}")
    for key, value in tags.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"tag name {key!r} must be a Python identifier (e.g. 'wd')")
        if key in RESERVED_TAGS:
            raise ValueError(
                f"tag name {key!r} is reserved ({', '.join(sorted(RESERVED_TAGS))}); rename it"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(
                f"tag {key!r} = {value!r}: tag values must be strings or numbers (flat, no lists)"
            )
    return dict(tags)


RAW_STEP = "raw_step"
RAW_EPOCH = "raw_epoch"
RAW_SEPARATOR = "__"
RAW_SHARED_DIMS = ("sample", "logit")


@dataclass(frozen=True)
class RawQuantity:
    long_name: str
    units: str
    description: str

    def attrs(self, layer: str) -> dict[str, str]:
        return {
            "long_name": f"{self.long_name}, {layer}",
            "units": self.units,
            "description": self.description,
            "layer": layer,
        }


RAW_QUANTITIES: dict[str, RawQuantity] = {
    "update": RawQuantity(
        "rule update of W",
        "1",
        "grad_W under the rule on the recorded training batch (what the optimizer receives).",
    ),
    "grad_bp": RawQuantity(
        "BP gradient of W", "1", "grad_W under BP, same weights, same batch, same loss."
    ),
    "feedback": RawQuantity(
        "feedback matrix",
        "1",
        "feedback_matrix(): the effective feedback of the backward (PFA: B·R; DFA: D, C × input).",
    ),
    "jacobian_true": RawQuantity(
        "true Jacobian",
        "1",
        "Per probe sample: ∂logits/∂(layer output), true (BP), sample × logit × output dims.",
    ),
    "jacobian_fb": RawQuantity(
        "feedback Jacobian",
        "1",
        "Per probe sample: the map the rule uses to send output errors to the layer output.",
    ),
}


def raw_name(quantity: str, layer: str) -> str:
    """The variable name of raw ``quantity`` for ``layer``: ``<quantity>__<layer>``."""
    return f"{quantity}{RAW_SEPARATOR}{layer}"


class SchemaError(ValueError):
    """A Dataset does not follow the run schema; the message names the problem."""


def _run_dims(ds: xr.Dataset) -> tuple[str, ...]:
    if "run_dims" not in ds.attrs:
        return ()
    try:
        dims = json.loads(ds.attrs["run_dims"])
    except (TypeError, ValueError) as error:
        raise SchemaError(f"dataset attr 'run_dims' is not valid JSON: {error}") from None
    if not isinstance(dims, list) or not all(isinstance(d, str) for d in dims):
        raise SchemaError(f"dataset attr 'run_dims' must be a JSON list of dim names, got {dims!r}")
    return tuple(dims)


def _check_raw_variable(da: xr.DataArray, name: str, lead: tuple[str, ...]) -> None:
    quantity, _, layer = name.partition(RAW_SEPARATOR)
    if quantity not in RAW_QUANTITIES:
        raise SchemaError(
            f"unknown raw variable {name!r}: quantity {quantity!r} is not one of "
            f"{', '.join(RAW_QUANTITIES)}"
        )
    dims = da.dims[len(lead) :]
    if da.dims[: len(lead)] != lead or not dims or dims[0] != RAW_STEP:
        raise SchemaError(
            f"raw variable {name!r} has dims {da.dims}; expected {(*lead, RAW_STEP)} first"
        )
    own = f"{layer}{RAW_SEPARATOR}"
    for dim in dims[1:]:
        if dim not in RAW_SHARED_DIMS and not dim.startswith(own):
            raise SchemaError(
                f"raw variable {name!r} has dim {dim!r}; raw dims are 'sample', 'logit' or the "
                f"layer's own dims named {own}*"
            )
    if da.attrs.get("layer") != layer:
        raise SchemaError(f"raw variable {name!r} lacks the 'layer' attribute {layer!r}")


def _check_variable(ds: xr.Dataset, name: str, lead: tuple[str, ...] = ()) -> None:
    da = ds[name]
    if RAW_SEPARATOR in name:
        _check_raw_variable(da, name, lead)
        expected = da.dims
    elif name == "probe_input":
        expected = PROBE_INPUT_DIMS.get(da.ndim - len(lead))
        expected = None if expected is None else (*lead, *expected)
    elif name in VARIABLES:
        expected = (*lead, *VARIABLES[name].dims)
    elif name.startswith(USER_PREFIX) and name[len(USER_PREFIX) :].isidentifier():
        expected = (*lead, *STEP)
    else:
        raise SchemaError(f"unknown variable {name!r}; known variables: {', '.join(VARIABLES)}")
    if da.dims != expected:
        raise SchemaError(f"variable {name!r} has dims {da.dims}, expected {expected}")
    for key in ("long_name", "units", "description"):
        if not da.attrs.get(key):
            raise SchemaError(f"variable {name!r} lacks the {key!r} attribute")
    if name in ANGLES:
        values = np.asarray(da.values, dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size and (finite.min() < 0 or finite.max() > 180):
            raise SchemaError(f"angle variable {name!r} has values outside [0, 180] degrees")


def _check_steps(ds: xr.Dataset, step: str, epoch: str, lead: tuple[str, ...]) -> None:
    if step not in ds.dims:
        return
    steps = np.asarray(ds[step].values)
    if steps.size and np.any(np.diff(steps) <= 0):
        raise SchemaError(f"coordinate {step!r} must be strictly increasing (no duplicates)")
    if epoch not in ds.coords or ds[epoch].dims[-1:] != (step,):
        raise SchemaError(f"coordinate {epoch!r} on dim {step!r} is missing")
    extra = set(ds[epoch].dims[:-1]) - set(lead)
    if extra:
        raise SchemaError(f"coordinate {epoch!r} has dims {ds[epoch].dims}; expected ({step!r},)")


def _check_coords(ds: xr.Dataset, lead: tuple[str, ...] = ()) -> None:
    _check_steps(ds, "step", "epoch", lead)
    _check_steps(ds, RAW_STEP, RAW_EPOCH, lead)
    if "layer" in ds.dims:
        if ds["layer"].dtype.kind not in "OU":
            raise SchemaError("coordinate 'layer' must hold module names (strings)")
    for name, var in LAYER_COORDS.items():
        if name in ds.coords and ds[name].dims[-1:] != var.dims:
            raise SchemaError(f"coordinate {name!r} has dims {ds[name].dims}, expected ('layer',)")


def validate(ds: xr.Dataset, *, attrs: bool = True) -> xr.Dataset:
    """Return ``ds`` unchanged if it follows the run schema, else raise :class:`SchemaError`.

    ``attrs=False`` skips the run-attr checks (for the pieces of a record that carry no attrs:
    the recorder's segments, before they are joined to the run's static part).
    """
    if attrs:
        missing = [key for key in REQUIRED_ATTRS if key not in ds.attrs]
        if missing:
            raise SchemaError(f"dataset attrs lack {', '.join(missing)}")
        for key in ("config", "rule_options"):
            try:
                json.loads(ds.attrs[key])
            except (TypeError, ValueError) as error:
                raise SchemaError(f"dataset attr {key!r} is not valid JSON: {error}") from None
        if "tags" in ds.attrs:
            try:
                tags = json.loads(ds.attrs["tags"])
                combined = "run_dims" in ds.attrs and isinstance(tags, list)
                for each in tags if combined else [tags]:  # combined runs: one per run
                    if each is not None or not combined:
                        check_tags(each)
            except (TypeError, ValueError) as error:
                raise SchemaError(f"dataset attr 'tags' is invalid: {error}") from None
    lead = _run_dims(ds)
    _check_coords(ds, lead)
    for name in ds.data_vars:
        _check_variable(ds, str(name), lead)
    return ds
