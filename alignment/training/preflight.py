"""Checks that need the dataset's shape, run before a model is built: does the model take the
dataset's images, and do the model, its feedback weights, their gradients and the optimizer's
state fit in the memory of the device?

Both build the model on PyTorch's ``meta`` device (shapes only: no memory, no arithmetic) and
push one batch of the dataset's shape through it. A problem is a
:class:`~alignment.config.ConfigError` naming the config keys and the fix, before training
allocates anything.

Which models fit which data: ``mlp`` takes any image; ``lenet`` any number of channels but images
of at least 16×16 pixels (``digits`` is 8×8); the CIFAR ResNets (``resnet20/32/56``) and the
ImageNet ``resnet18`` take 3-channel (colour) images only, so not ``mnist5k``, ``digits``,
``mnist`` or ``fashion_mnist``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from alignment.config import CHOICES, Config, ConfigError
from alignment.recording.tensorboard import summary_writer_class

GIB = 2**30
CGROUP = Path("/sys/fs/cgroup")  # cgroup v2: memory.max, memory.current


def preflight(
    config: Config,
    input_shape: Sequence[int],
    num_classes: int,
    device: str | torch.device = "cpu",
    *,
    memory_limit: int | None = None,
) -> None:
    """Refuse (:class:`ConfigError`) a model that cannot take ``input_shape`` images, or whose
    weights, feedback, gradients and optimizer state need more than ``memory_limit`` bytes
    (default: the memory available on ``device``, see :func:`available_memory`)."""
    check_extras(config)
    model = meta_model(config, input_shape, num_classes)
    needed, layer = training_bytes(config, model)
    limit = available_memory(device) if memory_limit is None else memory_limit
    if limit is not None and needed > limit:
        raise ConfigError(_too_big(config, model, needed, layer, limit, device))


def check_extras(config: Config) -> None:
    """Refuse (:class:`ConfigError`) a config that needs an optional package that is missing."""
    if config.record.tensorboard:
        try:
            summary_writer_class()
        except ImportError as error:
            raise ConfigError(f"record.tensorboard: true: {error}; or set it to false") from None


def meta_model(config: Config, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The converted model on the ``meta`` device, after one forward pass of a batch of
    ``input_shape``; a model that does not take such images is a :class:`ConfigError`."""
    shape = tuple(int(s) for s in input_shape)
    try:
        return _meta_forward(config, shape, num_classes)
    except _MismatchError as error:
        raise ConfigError(_mismatch(config, shape, num_classes, str(error))) from None


class _MismatchError(Exception):
    """The model cannot take the images; the message says why."""


def _meta_forward(config: Config, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    from alignment.training.trainer import build_model  # the trainer imports this module

    with torch.device("meta"):
        try:
            model = build_model(config, num_classes, shape)
        except (RuntimeError, ValueError) as error:  # e.g. LeNet on 8×8 images
            raise _MismatchError(str(error)) from None
        try:
            with torch.no_grad():
                model.eval()(torch.empty(2, *shape))
        except (RuntimeError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            if first is not None and first.in_channels != shape[0]:
                reason = f"it takes {first.in_channels}-channel images"
            raise _MismatchError(reason) from None
    return model


def _mismatch(config: Config, shape: tuple[int, ...], num_classes: int, reason: str) -> str:
    name, data = config.model.name, config.data.name
    fits = [
        other
        for other in CHOICES["model.name"]
        if other != name and _fits(config, other, shape, num_classes)
    ]
    return (
        f"model.name={name!r} does not fit data.name={data!r} (images "
        f"{'×'.join(str(s) for s in shape)}): {reason}. Models that fit {data}: "
        f"{', '.join(fits) or 'none'} (--set model.name=...), or choose a dataset this model "
        "takes (--set data.name=...)"
    )


def _fits(config: Config, model_name: str, input_shape: Sequence[int], num_classes: int) -> bool:
    plain = replace(config, model=replace(config.model, name=model_name), rule={"name": "bp"})
    try:
        _meta_forward(plain, tuple(input_shape), num_classes)
    except _MismatchError:
        return False
    return True


def optimizer_states(config: Config) -> int:
    """Tensors of a parameter's size that the optimizer keeps (momentum; Adam's two moments)."""
    if config.optim.name in ("adam", "adamw"):
        return 2
    return 1 if config.optim.momentum > 0 else 0


def training_bytes(config: Config, model: nn.Module) -> tuple[int, str]:
    """A lower bound on the bytes training ``model`` holds (each parameter with its gradient and
    optimizer state, each buffer once; activations not counted) and the biggest layer's name."""
    copies = 2 + optimizer_states(config)
    total, biggest, biggest_bytes = 0, "", -1
    for name, module in model.named_modules():
        size = sum(p.numel() * p.element_size() * copies for p in module.parameters(False))
        size += sum(b.numel() * b.element_size() for b in module.buffers(False))
        total += size
        if size > biggest_bytes:
            biggest, biggest_bytes = name, size
    return total, biggest


def available_memory(device: str | torch.device) -> int | None:
    """Bytes free on a CUDA device; on the CPU the memory available to new processes: the host's
    (``MemAvailable`` on Linux, else the physical memory) or, when less, what the cgroup v2
    memory limit leaves (a Slurm job's, a container's); None where unknown."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    known = [m for m in (_host_available(), _cgroup_available()) if m is not None]
    return min(known) if known else None


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        used = int((CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" or not limit.isdigit() else max(int(limit) - used, 0)


def _too_big(config: Config, model: nn.Module, needed: int, layer: str, limit: int, device) -> str:
    module = model.get_submodule(layer)
    tensors = ", ".join(
        f"{name} {'×'.join(str(s) for s in t.shape)}"
        for name, t in (*module.named_parameters(recurse=False), *module.named_buffers())
    )
    k = config.rule.get("k")
    fix = (
        f"lower rule.k (now {k}; the paper uses k=10): PFA's feedback B is N_out × k·N_out and R "
        "is k·N_out × N_in per layer"
        if k is not None
        else "choose a smaller model (model.name) or smaller images (data.name), or another rule"
    )
    key = f"rule.k={k}" if k is not None else f"model.name={config.model.name!r}"
    return (
        f"{key} with rule.name={config.rule_name!r} needs at least {needed / GIB:.1f} GiB for the "
        f"weights, feedback, gradients and optimizer state, more than the {limit / GIB:.1f} GiB "
        f"available on {torch.device(device)}; the biggest layer is {layer} ({tensors}). Fix: "
        f"{fix}"
    )
