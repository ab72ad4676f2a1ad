"""``convert(model, rule, **options)``: any nn.Module, every Linear and Conv1d/2d/3d under one
rule."""

from __future__ import annotations

import copy
import warnings

from torch import nn

from alignment.layers import Conv1d, Conv2d, Conv3d, FeedbackLayer, Linear
from alignment.layers.attention import MultiheadAttention
from alignment.rules import Rule, make_rule

LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: Linear,
    nn.Conv1d: Conv1d,
    nn.Conv2d: Conv2d,
    nn.Conv3d: Conv3d,
    nn.MultiheadAttention: MultiheadAttention,
}
"""torch.nn layer type → converted layer type. Converted layers convert again (to another rule)."""

ORDINARY_AUTOGRAD = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.PReLU,
)
"""Layers with parameters that stay ordinary autograd on purpose, without a warning: the rules
change only the backward of Linear and Conv layers (README, "Learning rules")."""


ADDED_EMBEDDINGS = {
    "torchvision.models.vision_transformer.VisionTransformer": {"class_token"},
    "torchvision.models.vision_transformer.Encoder": {"pos_embedding"},
}
"""Modules (by qualified class name) whose own parameters are embeddings added to or stacked
with the activations, not weights of a product: like biases, they learn from whatever error the
rule delivers to them, so they stay ordinary autograd without a warning."""


def _only_embeddings(module: nn.Module) -> bool:
    cls = type(module)
    names = ADDED_EMBEDDINGS.get(f"{cls.__module__}.{cls.__qualname__}", set())
    return {name for name, _ in module.named_parameters(recurse=False)} <= names


class UnconvertedLayerWarning(UserWarning):
    """Some layers with weights keep ordinary backprop because no rule layer exists for them."""


CONVERTED = (FeedbackLayer, MultiheadAttention)
"""Converted module types (a converted MultiheadAttention holds converted Linear layers)."""


def _target(module: nn.Module) -> type[nn.Module] | None:
    if isinstance(module, CONVERTED):
        return type(module)
    return LAYERS.get(type(module))


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _release_rules(model: nn.Module) -> None:
    """Let the rules of already converted layers undo what they did to the whole model."""
    rules = {id(m.rule): m.rule for m in model.modules() if isinstance(m, FeedbackLayer)}
    for old in rules.values():
        old.release(model)


def convert(model: nn.Module, rule: str | Rule, **options: object) -> nn.Module:
    """A copy of ``model`` whose Linear and Conv1d/Conv2d/Conv3d layers learn with ``rule``.

    Weights are copied, so outputs are bitwise identical to the original's. A bare ``nn.Linear`` or
    ``nn.Conv2d`` comes back as the converted layer. Layers with weights that cannot be converted
    (ConvTranspose2d, Embedding, …) are listed in an :class:`UnconvertedLayerWarning`;
    normalisation layers stay ordinary autograd silently, as in the paper.

    >>> import torch.nn as nn, alignment
    >>> net = alignment.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), "fa")
    >>> type(net[0]).__name__, net[0].B.shape
    ('Linear', torch.Size([3, 4]))
    """
    rule = make_rule(rule, **options)
    model = copy.deepcopy(model)
    rule = rule.bind(model)
    _release_rules(model)
    target = _target(model)
    if target is not None:
        layer = target.from_module(model, rule)
        rule.prepare_model(layer, _feedback_layers(layer))
        return layer
    if not list(model.children()) and _owns_parameters(model):
        raise TypeError(
            f"cannot convert {type(model).__name__}: rules exist for nn.Linear and nn.Conv1d/2d/3d "
            "(and models containing them)"
        )
    converted: dict[int, nn.Module] = {}
    skipped: list[str] = []
    inside: list[str] = []  # converted containers (attention): their parts convert with them
    for name, parent in list(model.named_modules()):
        if any(name.startswith(prefix) for prefix in inside):
            continue
        if _target(parent) is not None and not isinstance(parent, FeedbackLayer):
            inside.append(f"{name}." if name else "")
        if _target(parent) is None and _owns_parameters(parent):
            if not isinstance(parent, ORDINARY_AUTOGRAD) and not _only_embeddings(parent):
                skipped.append(f"{name or '<root>'} ({type(parent).__name__})")
        for child_name, child in list(parent._modules.items()):
            target = None if child is None else _target(child)
            if target is None:
                continue
            if id(child) not in converted:
                converted[id(child)] = target.from_module(child, rule)
            setattr(parent, child_name, converted[id(child)])
    if skipped:
        warnings.warn(
            f"alignment.convert(rule={rule.name!r}): {len(skipped)} layer(s) with weights keep "
            f"ordinary backprop because no rule layer exists for them: {', '.join(skipped)}",
            UnconvertedLayerWarning,
            stacklevel=2,
        )
    rule.prepare_model(model, _feedback_layers(model))
    return model


def _feedback_layers(model: nn.Module) -> list[FeedbackLayer]:
    return [m for m in model.modules() if isinstance(m, FeedbackLayer)]
