"""torch.compile of converted models: every rule compiles without a graph break, and compiled
gradients equal eager ones.

The default run compiles three representative rules with the ``aot_eager`` backend (the graph
capture and the autograd Functions are what can break; that backend runs torch's own kernels, so
compiled gradients equal eager ones to within 1e-6 of the largest entry; measured: bitwise equal)
and the trainer with ``compile``. Every rule, and inductor (seconds to minutes of compilation
per rule on a 2-core CPU), are ``slow``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from torch._dynamo.utils import counters

import alignment
from alignment.cli import main
from tests.test_amp import IDS, VARIANTS, batch, convnet, gradients
from tests.test_run_safety import CONFIG

REPRESENTATIVE = [("brsf", {}), ("dfa", {}), ("pfa", {"path": "two_stage"})]


def assert_compiled_equals_eager(
    rule: str, options: dict, backend: str, tolerance: float, dtype: torch.dtype | None = None
) -> None:
    x, y = batch(seed=2)
    torch.manual_seed(0)
    eager = alignment.convert(convnet(), rule, **options)
    twin = copy.deepcopy(eager)
    torch._dynamo.reset()  # every rule's forward is the same code object: no recompile limit
    compiled = torch.compile(twin, backend=backend, fullgraph=True)  # fullgraph: no graph break
    expected = gradients(eager, x, y, dtype)
    got = gradients(compiled, x, y, dtype)
    for (name, _), a, b in zip(eager.named_parameters(), expected, got, strict=True):
        error = ((a - b).abs().max() / a.abs().max()).item()
        assert error <= tolerance, f"{rule} {name}: compiled differs by {error:.1e} (relative)"
    for name, buffer in eager.named_buffers():  # brSF's last draw, BN statistics
        assert torch.allclose(buffer.float(), dict(twin.named_buffers())[name].float()), name


@pytest.mark.parametrize(("rule", "options"), REPRESENTATIVE, ids=["brsf", "dfa", "pfa-two_stage"])
def test_compiled_gradients_equal_eager(rule: str, options: dict) -> None:
    assert_compiled_equals_eager(rule, options, "aot_eager", 1e-6)


def test_compiled_under_bf16_autocast_equals_eager() -> None:
    assert_compiled_equals_eager("fa", {}, "aot_eager", 1e-6, torch.bfloat16)


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "options"), VARIANTS, ids=IDS)
def test_every_rule_compiles(rule: str, options: dict) -> None:
    assert_compiled_equals_eager(rule, options, "aot_eager", 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "options"), VARIANTS, ids=IDS)
def test_every_rule_compiles_with_inductor(rule: str, options: dict, monkeypatch) -> None:
    """Inductor generates its own kernels and reorders fp32 reductions (BN statistics over a
    batch, the weight gradients): measured ≤ 1e-4 of the largest entry, so 1e-3. Its own random
    numbers differ from eager's, so brSF's draw matches only with ``fallback_random``."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    assert_compiled_equals_eager(rule, options, "inductor", 1e-3)


def train_compiled(tmp_path, compile_value: str) -> None:
    out, config_file = tmp_path / "out", tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({**CONFIG, "rule": {"name": "brsf"}, "epochs": 1}))
    args = ["train", str(config_file), "--out", str(out), "--quiet", "--set", "record.every=1"]
    torch._dynamo.reset()
    counters.clear()
    assert main([*args, "--set", f"compile={compile_value}"]) == 0
    assert counters["stats"]["unique_graphs"] >= 1  # the training step did run compiled
    ds = alignment.open_run(out / "seed0")
    for variable in ("loss", "grad_alignment", "feedback_alignment"):
        values = ds[variable].values
        assert np.isfinite(values[~np.isnan(values)]).all() and np.isfinite(values).any(), variable


def test_train_compiled(tmp_path) -> None:
    train_compiled(tmp_path, "aot_eager")


@pytest.mark.slow
def test_train_compiled_with_inductor(tmp_path) -> None:
    train_compiled(tmp_path, "true")
