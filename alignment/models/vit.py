"""A small Vision Transformer for MNIST-sized images (torchvision's VisionTransformer).

28 × 28 digits cut into 7 × 7 patches give 16 tokens plus the class token; two encoder blocks of
width 32 with 2 heads and an MLP of 64. Every Linear, the patch embedding (a Conv2d) and both
projections of every attention block convert to the rule (alignment.convert).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from alignment.models.init import init_weights


def vit(
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    *,
    patch_size: int = 7,
    num_layers: int = 2,
    num_heads: int = 2,
    hidden_dim: int = 32,
    mlp_dim: int = 64,
    init: str = "xavier",
) -> nn.Module:
    """VisionTransformer with a patch embedding for ``in_channels`` channels; every Linear and
    Conv2d (the classifier head included, which torchvision zeroes) initialised by ``init``, the
    packed attention in-projections as torch initialises them (Xavier-uniform)."""
    if image_size % patch_size:
        raise ValueError(
            f"ViT: image_size {image_size} is not a multiple of patch_size {patch_size}"
        )
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        num_classes=num_classes,
    )
    model.conv_proj = nn.Conv2d(in_channels, hidden_dim, patch_size, stride=patch_size)
    return init_weights(model, init)
