"""Per-sample rule updates of every converted layer's W, through ``torch.func``.

The update a rule makes to W for one sample alone, gᵢ = ∂ℓᵢ/∂W as the rule's backward computes it
(grad_W = δᵀx with the rule's δ), for every sample of a batch at once: ``torch.func.vmap`` over the
samples of ``torch.func.grad`` of the per-sample loss ℓᵢ = ``loss_fn(logits[i:i+1], y[i:i+1])``.
The converted layers' autograd Functions carry vmap rules, so the rule's own backward runs under
vmap, DFA's injected output error included; BackPACK-style hooks on torch's built-in layers could
not see it.

The passes run in eval mode (BatchNorm on its running statistics, no dropout), as every per-sample
pass of the probe batch does (:mod:`alignment.recording.context`): in training mode a sample's
update would depend on the other samples of its batch. With a mean-reduced loss (the default
cross-entropy) the per-sample updates average to the update of the whole batch in eval mode.
Random numbers drawn by a forward (brSF's feedback) are the same for every sample
(``randomness="same"``) and come from a forked generator, so the training's stream is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.func import grad, vmap

if TYPE_CHECKING:
    from alignment.recording.context import LossFn, Network

CHUNK_BYTES = 256 * 2**20
"""Per-sample updates held at once: the samples are processed in chunks of at most this size."""


def weight_key(layer: str) -> str:
    """The name of a converted layer's weight among the model's parameters."""
    return f"{layer}.weight" if layer else "weight"


def trainable(net: Network) -> list[str]:
    """The converted layers whose W is trained (``requires_grad``): those with an update."""
    return [name for name, layer in net.layers.items() if layer.weight.requires_grad]


def chunk_size(net: Network, n: int, budget: int | None = None) -> int:
    """Samples per chunk so that their per-sample updates of every W fit in ``budget`` bytes
    (default :data:`CHUNK_BYTES`); at least one."""
    budget = CHUNK_BYTES if budget is None else budget
    per_sample = sum(net.layers[name].weight.nbytes for name in trainable(net))
    return max(1, min(n, budget // max(per_sample, 1)))


def per_sample_updates(net: Network, x: Tensor, y: Tensor, loss_fn: LossFn) -> dict[str, Tensor]:
    """{layer: tensor n × W's shape}: the rule's update of W for each sample of ``(x, y)`` alone
    (eval mode; trainable layers only). The live model is not modified."""
    # imported here: the context imports the quantities, which import this module
    from alignment.recording.context import eval_mode, fork_rng

    names = trainable(net)
    if not names:
        return {}
    params = {k: v.detach() for k, v in net.model.named_parameters(remove_duplicate=False)}
    weights = {name: params.pop(weight_key(name)) for name in names}

    def sample_loss(w: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        tensors = params | net.cloned_buffers(every=True)
        tensors |= {weight_key(name): value for name, value in w.items()}
        logits = net.run("rule", xi.unsqueeze(0), tensors=tensors)
        return loss_fn(logits, yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="same")
    with fork_rng(net.device), torch.enable_grad(), eval_mode(net.model):
        updates = per_sample(weights, x, y)
    return {name: updates[name].detach() for name in names}
