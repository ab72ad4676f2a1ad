"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by
PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel`.

``torchrun --nproc_per_node N -m alignment train CONFIG`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU). What each
part of the toolkit does across ranks:

* **Data**: every rank draws the same epoch permutation (seeded by run seed and epoch) through a
  :class:`~torch.utils.data.DistributedSampler` and takes its share of each global batch of
  ``data.batch_size`` samples (``batch_size / N`` each). The union of the ranks' batches is the
  single-process batch, so N ranks train on the same global batches as one process.
* **Gradients**: DDP averages W's gradient and every learned feedback tensor's (PFA's R, KP's
  B: they are ordinary Parameters) over ranks, so all ranks take the same optimiser step.
* **Fixed feedback and masks** are buffers: every rank builds them from the same seed and DDP
  broadcasts rank 0's copy when it wraps the model, so they are identical everywhere.
* **DFA**: each rank's forward carries its own output error to its own layers; only the weight
  gradients are averaged, exactly as for BP.
* **BatchNorm** normalises each rank's share of the batch (DDP's default, as in torchvision's
  reference ImageNet recipe), and rank 0's running statistics are broadcast at every forward.
  So a model with BatchNorm is not bitwise the single-process model; BN-free models (the MNIST
  MLP, LeNet) are, up to float summation order.
* **Evaluation**: every rank classifies its shard of the evaluation set with rank 0's buffers
  (BatchNorm's running statistics) and the ranks sum their counts: each gets the accuracy of the
  whole set, the single-process value.
* **Recording and checkpoints**: rank 0 records and checkpoints; the others wait at a
  barrier. A resumed run restores every rank from rank 0's checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """Where this process stands: rank ``rank`` of ``size`` (``size == 1``: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over ranks (the global batch's loss from the ranks' losses)."""
        if not self.distributed:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.size

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over ranks (``value`` itself outside torchrun)."""
        if not self.distributed:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers of ``module`` (what DDP does at each forward)."""
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def gather(self, part: torch.Tensor) -> torch.Tensor:
        """The global batch from every rank's ``part``, in the single-process order.

        Rank r holds the samples at positions r, r + N, r + 2N, … of the global batch (see
        :class:`alignment.training.batches.Batches`), so the parts are interleaved back.
        """
        if not self.distributed:
            return part
        parts = [torch.empty_like(part) for _ in range(self.size)]
        dist.all_gather(parts, part.contiguous())
        return torch.stack(parts, dim=1).flatten(0, 1)

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (decisions that must agree, e.g. "resume or not")."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def world_from_env() -> World:
    """The world ``torchrun`` describes in the environment (size 1 outside torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def setup(device: str) -> tuple[World, str]:
    """Join the process group if launched by torchrun; return the world and this rank's device.

    ``device`` is ``cpu`` or ``cuda``; under torchrun with CUDA each rank takes
    ``cuda:LOCAL_RANK``.
    """
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device == "cuda":
        if torch.cuda.device_count() <= world.local_rank:
            raise RuntimeError(
                f"rank {world.rank} needs cuda:{world.local_rank} but this node has "
                f"{torch.cuda.device_count()} GPUs; lower --nproc_per_node or use --device cpu"
            )
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return world, device


def wrap(model: nn.Module, world: World, device: str) -> nn.Module:
    """``model`` under DDP; ``model`` itself outside torchrun.

    DDP broadcasts rank 0's parameters and buffers (fixed feedback, masks) when it wraps the
    model, and its buffers again at every forward (BatchNorm's running statistics).
    """
    if not world.distributed:
        return model
    cuda = device.startswith("cuda")
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[world.local_rank] if cuda else None
    )


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
