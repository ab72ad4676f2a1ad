"""Deterministic, resumable batching with the paper's drop-last semantics.

The order of epoch ``e`` is a permutation drawn from a generator seeded by (seed, e) alone, so a
run resumed at batch ``i`` of epoch ``e`` sees exactly the batches the uninterrupted run saw.
Under torchrun each of the ``world_size`` ranks takes its share of every global batch through a
:class:`~torch.utils.data.DistributedSampler` over that same permutation: the ranks' batches of
``batch_size / world_size`` samples together are exactly the single-process batch.
In-memory datasets (``TensorDataset``) are batched by fancy indexing; others through a
``DataLoader`` over the epoch's remaining batches (``num_workers=0`` keeps augmentation on the
global torch RNG, which checkpoints restore; with workers a resumed epoch draws other crops).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset


class Batches:
    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        *,
        limit: int | None = None,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers = num_workers
        self.rank, self.world_size = rank, world_size
        if batch_size % world_size:
            raise ValueError(
                f"data.batch_size {batch_size} is not divisible by the {world_size} processes; "
                "use a multiple of --nproc_per_node"
            )
        per_epoch = len(dataset) // batch_size  # drop the last partial batch, as the paper
        if per_epoch == 0:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {len(dataset)} training samples; lower "
                "data.batch_size"
            )
        self.per_epoch = per_epoch if limit is None else min(per_epoch, limit)

    def order(self, epoch: int) -> Tensor:
        """This rank's samples of ``epoch`` in order: every ``world_size``-th entry of the epoch's
        permutation (the whole permutation in a single process)."""
        sampler = DistributedSampler(
            self.dataset,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=self.seed * 1_000_003,  # the sampler's generator is seeded with seed + epoch
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's batches of ``epoch`` from batch index ``start`` on."""
        order, size = self.order(epoch), self.batch_size // self.world_size
        indices = [order[i * size : (i + 1) * size] for i in range(start, self.per_epoch)]
        if isinstance(self.dataset, TensorDataset):
            x, y = self.dataset.tensors
            for index in indices:
                yield x[index], y[index]
            return
        loader = DataLoader(
            self.dataset, batch_sampler=[i.tolist() for i in indices], num_workers=self.num_workers
        )
        yield from loader


def stack_first(dataset: Dataset, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` items of ``dataset`` as one batch (the recorder's fixed probe batch)."""
    n = min(n, len(dataset))
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        return x[:n], y[:n]
    items = [dataset[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def evaluate(model: torch.nn.Module, dataset: Dataset, batch_size: int, device: str) -> float:
    """Fraction of ``dataset`` classified correctly (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    correct = 0
    loader = (
        DataLoader(dataset, batch_size=batch_size)
        if not isinstance(dataset, TensorDataset)
        else zip(*(t.split(batch_size) for t in dataset.tensors), strict=True)
    )
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x.to(device)).argmax(-1) == y.to(device)).sum().item()
    model.train(was_training)
    return correct / len(dataset)
