"""The small ViT of the demo configs: the model, its conversion, and a few training steps."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import alignment
from alignment.cli import main
from alignment.config import bundled_configs, load_config
from alignment.layers.attention import MultiheadAttention
from alignment.recording import open_run, validate

RULES = ("bp", "fa", "dfa", "pfa")


def test_vit_registry_model_on_mnist_shapes_converts_silently() -> None:
    torch.manual_seed(0)
    model = alignment.models.MODELS["vit"](in_channels=1, image_size=28, num_classes=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = alignment.convert(model, "pfa", k=2)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(converted(x), model(x)) and converted(x).shape == (2, 10)
    assert sum(isinstance(m, MultiheadAttention) for m in converted.modules()) == 2


def test_demo_vit_configs_are_listed_for_bp_fa_dfa_and_pfa(capsys) -> None:
    names = {f"demo/vit/{rule}" for rule in RULES}
    assert names <= set(bundled_configs())
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in names)
    assert {load_config(name).rule_name for name in names} == set(RULES)


@pytest.mark.slow  # 25-100 s: the CLI, the data and a recorded ViT step
@pytest.mark.filterwarnings("ignore::alignment.recording.FewRecordsWarning")
def test_demo_vit_trains_a_few_recorded_steps(tmp_path: Path) -> None:
    out = tmp_path / "dfa"
    sets = ["epochs=1", "max_steps_per_epoch=2", "record.every=1", "record.probe_size=2"]
    args = ["train", "demo/vit/dfa", "--out", str(out), "--quiet"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    ds = open_run(out / "seed0")
    validate(ds)
    layers = [str(v) for v in ds["layer"].values]
    assert "encoder.layers.encoder_layer_1.self_attention.in_proj" in layers
    assert np.isfinite(ds["grad_alignment"].values).all()
