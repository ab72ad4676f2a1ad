"""Mixed precision (autocast, GradScaler) for every rule, on CPU.

The feedback products of every rule run in the dtype autocast gives the forward op (bf16 here),
the gradients of fp32 parameters are fp32, and a record is computed in full precision.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import alignment
from alignment.cli import main
from alignment.config import config_from_dict, load_config
from alignment.rules import RULES
from alignment.training import train, trainer
from tests.test_run_safety import CONFIG, STOP, KilledError, assert_same_record, stop_after

VARIANTS = [(name, {}) for name in RULES] + [
    ("pfa", {"path": "two_stage"}),
    ("fa", {"density": 0.5}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in VARIANTS]


def convnet() -> nn.Module:
    """conv, BN, ReLU, pool, linear (bias-free convs before BN: a conv bias there has a zero true
    gradient, whose cosine would only measure rounding noise)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(32, 3, 16, 16, generator=generator), torch.randint(
        0, 10, (32,), generator=generator
    )


def gradients(model: nn.Module, x, y, dtype: torch.dtype | None) -> list[torch.Tensor]:
    """Parameter gradients of one cross-entropy step, under CPU autocast to ``dtype`` if given."""
    model.zero_grad()
    torch.manual_seed(2)  # brSF draws its feedback in the forward: the same draw in both runs
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("rule", "options"), VARIANTS, ids=IDS)
def test_bf16_gradients_match_fp32(rule: str, options: dict) -> None:
    """Per parameter, cos(bf16 gradient, fp32 gradient) > 0.99.

    Tolerance: bf16 keeps 8 significant bits (unit roundoff 2⁻⁹ ≈ 2e-3), so each product is
    accurate to ~1e-3 relative; what costs more is discrete: rounding flips a few ReLU masks and
    max-pool choices, and the first BN's 16-element bias gradient is a sum with cancellation. On
    this net the worst parameter of plain torch BP under bf16 autocast reaches 0.989–0.997 over
    eight input seeds (every rule here: 0.988–0.998 over six), so 0.99 sits at torch's own noise
    level and the test uses one fixed batch (seed 2: every rule ≥ 0.994). A wrong product (fp32
    feedback against a bf16 δ mis-cast, a lost scale) falls far below; the exact checks are
    ``test_converted_bp_is_native_torch_under_autocast`` and ``test_feedback_products_run_in_bf16``.
    """
    x, y = batch(seed=2)
    torch.manual_seed(0)
    model = alignment.convert(convnet(), rule, **options)
    twin = copy.deepcopy(model)
    reference = gradients(model, x, y, None)
    mixed = gradients(twin, x, y, torch.bfloat16)
    for (name, _), ref, got in zip(model.named_parameters(), reference, mixed, strict=True):
        assert got.dtype == torch.float32, name
        assert torch.isfinite(got).all(), name
        cosine = F.cosine_similarity(ref.flatten().double(), got.flatten().double(), dim=0)
        assert cosine > 0.99, f"{rule} {name}: cos {cosine:.4f}"


def test_converted_bp_is_native_torch_under_autocast() -> None:
    """BP's Functions run the same bf16 products as torch's own Linear and Conv2d backward."""
    x, y = batch()
    torch.manual_seed(0)
    plain = convnet()
    converted = alignment.convert(plain, "bp")
    for a, b in zip(
        gradients(plain, x, y, torch.bfloat16),
        gradients(converted, x, y, torch.bfloat16),
        strict=True,
    ):
        assert torch.equal(a, b)


class ProductDtypes(TorchDispatchMode):
    """Records the operand dtypes of every matrix product and convolution backward."""

    PRODUCTS = ("mm", "bmm", "addmm", "convolution_backward")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, set[torch.dtype]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.PRODUCTS:
            dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor)}
            self.seen.append((func.overloadpacket.__name__, dtypes))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("rule", "options"), [("fa", {}), ("dfa", {}), ("pfa", {"path": "two_stage"}), ("kp", {})]
)
def test_feedback_products_run_in_bf16(rule: str, options: dict) -> None:
    x, y = batch()
    model = alignment.convert(convnet(), rule, **options)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y)
    with ProductDtypes() as products:
        loss.backward()
    kinds = {name for name, _ in products.seen}
    assert "convolution_backward" in kinds and "mm" in kinds
    assert all(dtypes == {torch.bfloat16} for _, dtypes in products.seen), products.seen


@pytest.mark.parametrize("rule", ["fa", "pfa", "dfa", "brsf"])
def test_grad_scaler_fp16(rule: str) -> None:
    """fp16 autocast + GradScaler: the scaled loss flows through the rule's backward, unscaled
    gradients match fp32 (fp16 keeps 11 bits, so cos > 0.999), and the step is taken."""
    x, y = batch()
    torch.manual_seed(0)
    model = alignment.convert(convnet(), rule)
    reference = gradients(copy.deepcopy(model), x, y, None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    for p, ref in zip(model.parameters(), reference, strict=True):
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        assert F.cosine_similarity(p.grad.flatten(), ref.flatten(), dim=0) > 0.999
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**8  # no overflow: the step was taken
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("rule", ["pfa", "dfa"])
def test_recorder_measures_in_full_precision_under_autocast(rule: str, tmp_path) -> None:
    """A record taken inside an autocast step is the fp32 record (angles in float64)."""
    x, y = batch()
    records = []
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = alignment.convert(convnet(), rule)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        rec = alignment.Recorder(
            model,
            tmp_path / name,
            optimizer=opt,
            probe=(x[:4], y[:4]),
            quantities=["grad_alignment", "feedback_alignment"],
            min_records=0,
        )
        with rec:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                rec.step(x, y)
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        records.append(alignment.open_run(tmp_path / name).isel(step=0).load())
    for variable in ("grad_alignment", "feedback_alignment"):  # DFA's: from Jacobians
        fp32, bf16 = records[0][variable], records[1][variable]
        assert bf16.dtype == "float64" and bool(bf16.notnull().any())
        assert fp32.equals(bf16), variable


# ----------------------------------------------------------------------------- the trainer
def test_train_with_bf16_autocast_records_finite_quantities(tmp_path) -> None:
    out, config_file = tmp_path / "out", tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({**CONFIG, "rule": {"name": "pfa", "k": 2}}))
    args = ["train", str(config_file), "--out", str(out), "--quiet", "--set", "amp=bf16"]
    assert main([*args, "--set", "epochs=1", "--set", "record.every=1"]) == 0
    ds = alignment.open_run(out / "seed0")
    assert ds.attrs and yaml.safe_load((out / "seed0" / "config.yaml").read_text())["amp"] == "bf16"
    for variable in ("loss", "grad_alignment", "feedback_alignment"):
        values = ds[variable].values
        assert np.isfinite(values[~np.isnan(values)]).all() and np.isfinite(values).any(), variable


def test_amp_values_are_checked(tmp_path, capsys) -> None:
    assert load_config("demo/pfa", ["amp=off"]).amp == "off"  # YAML reads a bare off as false
    assert main(["train", "demo/pfa", "--out", str(tmp_path), "--set", "amp=fp8"]) == 2
    assert "amp='fp8' is invalid; valid values: off, bf16, fp16" in capsys.readouterr().err


def test_an_fp16_run_resumes_with_its_grad_scaler(tmp_path, monkeypatch) -> None:
    """The GradScaler's state is in the checkpoint: an fp16 run interrupted and resumed gives the
    uninterrupted record. The scaler here doubles its scale after every good step and overflows
    every few steps, so a resume that restarted it would skip other steps."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(
        torch.amp, "GradScaler", lambda device: real(device, init_scale=2.0**14, growth_interval=1)
    )
    config = config_from_dict({**CONFIG, "amp": "fp16"})
    train(config, tmp_path / "reference", quiet=True)
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", stop_after(STOP))
        with pytest.raises(KilledError):
            train(config, tmp_path / "interrupted", quiet=True)
    state = torch.load(tmp_path / "interrupted/seed0/checkpoint.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] != 2.0**14
    train(config, tmp_path / "interrupted", quiet=True)
    assert_same_record(tmp_path / "interrupted/seed0", tmp_path / "reference/seed0")
    losses = alignment.open_run(tmp_path / "reference/seed0")["loss"].values
    assert np.isfinite(losses[~np.isnan(losses)]).all()
