"""Deterministic, resumable batching with the paper's drop-last semantics, and the evaluation pass.

The order of epoch ``e`` is a permutation drawn from a generator seeded by (seed, e) alone, so a
run resumed at batch ``i`` of epoch ``e`` sees exactly the batches the uninterrupted run saw.
Under torchrun each of the ``world_size`` ranks takes its share of every global batch through a
:class:`~torch.utils.data.DistributedSampler` over that same permutation: the ranks' batches of
``batch_size / world_size`` samples together are exactly the single-process batch.
In-memory datasets (``TensorDataset``) are batched by fancy indexing; others through one
``DataLoader`` for the whole run, whose batch sampler is set to each epoch's remaining batches
(``persistent_workers`` with ``num_workers > 0``: the workers start once, not every epoch;
``pin_memory`` on CUDA). ``num_workers=0`` keeps augmentation on the global torch RNG, which
checkpoints restore, and the loader draws nothing else from it (it has a generator of its own,
which seeds the workers), so a run resumed mid-epoch draws the same crops as the uninterrupted
run. (Earlier versions built a loader per epoch that drew one number from the global RNG when it
started, at another point of a resumed run.) With workers each worker's RNG is seeded once per run
from the loader's generator and is not checkpointed, so a resumed epoch draws other crops.

:class:`Evaluation` is the evaluation pass, also with one persistent (pinned, with workers)
``DataLoader``: each rank classifies its contiguous shard of the evaluation set and the counts
are summed over ranks, so every rank gets the accuracy of the whole set (one process: exactly the
fraction classified correctly).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

from alignment.training.distributed import World


class _EpochBatches:
    """The batch sampler of a run's one training ``DataLoader``: the index lists of the epoch
    set last (each ``iter(loader)`` takes the lists set before it)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _close(loader: DataLoader | None) -> None:
    """Stop ``loader``'s persistent workers now (what its iterator does when collected)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


class Batches:
    """A run's training batches, epoch by epoch (see the module docstring); :meth:`close` stops
    the loader's workers. One epoch is iterated at a time."""

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
        pin_memory: bool = False,
    ) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self._sampler = _EpochBatches()
        self._loader: DataLoader | None = None
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
        self._sampler.batches = [i.tolist() for i in indices]
        yield from self.loader

    @property
    def loader(self) -> DataLoader:
        """The run's one ``DataLoader`` (for datasets other than ``TensorDataset``)."""
        if self._loader is None:
            self._loader = DataLoader(
                self.dataset,
                batch_sampler=self._sampler,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                persistent_workers=self.num_workers > 0,
                generator=torch.Generator().manual_seed(self.seed),  # seeds workers only
            )
        return self._loader

    def close(self) -> None:
        """Stop the loader's worker processes (a later epoch starts new ones)."""
        _close(self._loader)
        self._loader = None


def stack_first(dataset: Dataset, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` items of ``dataset`` as one batch (the recorder's fixed probe batch)."""
    n = min(n, len(dataset))
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        return x[:n], y[:n]
    items = [dataset[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


class Evaluation:
    """The evaluation pass of a run: this rank's shard of ``dataset`` through one persistent
    ``DataLoader`` (``num_workers`` workers, pinned if ``pin_memory``), the counts summed over
    ``world``'s ranks. :meth:`close` stops the workers."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        world: World | None = None,
    ) -> None:
        self.world = world or World()
        n, rank, size = len(dataset), self.world.rank, self.world.size
        lo, hi = rank * n // size, (rank + 1) * n // size
        self.size, self.pin_memory = hi - lo, pin_memory
        self._tensors: tuple[tuple[Tensor, ...], ...] | None = None
        self._loader: DataLoader | None = None
        if isinstance(dataset, TensorDataset):
            self._tensors = tuple(t[lo:hi].split(batch_size) for t in dataset.tensors)
        else:
            shard = dataset if size == 1 else Subset(dataset, range(lo, hi))
            self._loader = DataLoader(
                shard,
                batch_size=batch_size,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=num_workers > 0,
                generator=torch.Generator().manual_seed(0),  # not the global RNG
            )

    def accuracy(self, model: torch.nn.Module, device: str) -> float:
        """Fraction of the whole evaluation set ``model`` classifies correctly (eval mode, no
        grad; under torchrun every rank takes part and gets the same value, the model's buffers,
        e.g. BatchNorm's running statistics, being rank 0's)."""
        if self.world.distributed:  # the ranks' own BN statistics differ after a training step
            self.world.broadcast_buffers(model)
        was_training = model.training
        model.eval()
        correct = 0
        batches = zip(*self._tensors, strict=True) if self._tensors is not None else self._loader
        with torch.no_grad():
            for x, y in batches:
                x = x.to(device, non_blocking=self.pin_memory)
                y = y.to(device, non_blocking=self.pin_memory)
                correct += (model(x).argmax(-1) == y).sum().item()
        model.train(was_training)
        counts = torch.tensor([correct, self.size], dtype=torch.int64, device=device)
        counts = self.world.sum(counts)  # on the device: NCCL reduces only CUDA tensors
        return int(counts[0]) / int(counts[1])

    def close(self) -> None:
        """Stop the loader's worker processes."""
        _close(self._loader)


def evaluate(model: torch.nn.Module, dataset: Dataset, batch_size: int, device: str) -> float:
    """Fraction of ``dataset`` classified correctly (eval mode, no grad), in this process."""
    evaluation = Evaluation(dataset, batch_size)
    try:
        return evaluation.accuracy(model, device)
    finally:
        evaluation.close()
