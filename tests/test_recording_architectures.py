"""The Recorder on the layer types beyond Linear and Conv2d: Conv1d, Conv3d, attention (a ViT)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignment
from alignment.recording import schedules, validate

pytestmark = pytest.mark.filterwarnings("ignore::alignment.recording.FewRecordsWarning")


def conv_nd_net(dims: int) -> nn.Module:
    conv = {1: nn.Conv1d, 3: nn.Conv3d}[dims]
    torch.manual_seed(0)
    return nn.Sequential(
        conv(2, 3, 3, padding=1),
        nn.ReLU(),
        conv(3, 2, 2, stride=2),
        nn.Flatten(),
        nn.Linear(2 * 2**dims, 3),
    ).double()


def record_steps(model: nn.Module, run_dir, data: list, probe: tuple) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with alignment.Recorder(
        model,
        run_dir,
        probe=probe,
        optimizer=opt,
        schedule=schedules.always,
        jacobian_schedule=schedules.always,
        raw_schedule=schedules.always,
        raw_layers="all",
        seed=0,
    ) as rec:
        for x, y in data:
            rec.step(x, y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()


def _data(shape: tuple, n: int = 2, seed: int = 1) -> list:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(shape, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (shape[0],), generator=g),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(("rule", "dims"), [("dfa", 1), ("pfa", 3)])
def test_conv1d_and_conv3d_nets_record_with_their_own_dims(tmp_path, rule: str, dims: int) -> None:
    model = alignment.convert(conv_nd_net(dims), rule)
    shape = (4, 2, *(4,) * dims)
    record_steps(model, tmp_path, _data(shape), _data(shape, 1, seed=7)[0])
    ds = alignment.open_run(tmp_path, raw=True)
    validate(ds)
    kernel = {1: ("0__kl",), 3: ("0__kd", "0__kh", "0__kw")}[dims]
    grid = {1: ("2__length",), 3: ("2__depth", "2__height", "2__width")}[dims]
    assert ds["update__0"].dims == ("raw_step", "0__out", "0__in", *kernel)
    assert ds["jacobian_fb__2"].dims == ("raw_step", "sample", "logit", "2__out", *grid)
    for name in ("feedback_alignment", "grad_alignment", "delta_alignment", "jacobian_alignment"):
        assert np.isfinite(ds[name].values).all(), name


def small_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=14, patch_size=7, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16,
        num_classes=3,
    ).double()  # fmt: skip
    nn.init.xavier_uniform_(vit.heads.head.weight)  # torchvision's zero head: every angle NaN
    return vit


@pytest.mark.parametrize("rule", ["dfa", pytest.param("pfa", marks=pytest.mark.slow)])
def test_recorder_on_a_small_vit(tmp_path, rule: str) -> None:
    """Token-level layers: one Jacobian/δ per sample over all its positions (``pos0`` dim)."""
    model = alignment.convert(small_vit(), rule)
    shape = (3, 3, 14, 14)
    record_steps(model, tmp_path, _data(shape, 1), _data(shape, 1, seed=7)[0])
    ds = alignment.open_run(tmp_path, raw=True)
    validate(ds)
    layers = list(ds["layer"].values)
    attn = "encoder.layers.encoder_layer_0.self_attention"
    assert f"{attn}.in_proj" in layers and f"{attn}.out_proj" in layers
    assert ds[f"jacobian_fb__{attn}.in_proj"].dims[-2:] == (
        f"{attn}.in_proj__pos0",
        f"{attn}.in_proj__out",
    )
    for name in ("feedback_alignment", "grad_alignment", "delta_alignment", "jacobian_alignment"):
        assert np.isfinite(ds[name].values).all(), name
