"""The run's data loaders: one persistent training DataLoader whose epochs are exactly the
per-epoch loaders' of earlier versions (order, augmentation, RNG use, resume mid-epoch), and the
evaluation pass, sharded over ranks with the single-process accuracy."""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from alignment.config import config_from_dict
from alignment.recording import open_run
from alignment.training import resume, train, trainer
from alignment.training.batches import Batches, Evaluation, evaluate
from alignment.training.distributed import World
from tests.test_data import make_cifar
from tests.test_run_safety import KilledError, stop_after
from tests.test_training import data_of, tiny


class Augmented(Dataset):
    """Item i: ``(i + noise from the global torch RNG, i)``, as a random crop draws its offset;
    ``pid=True`` puts the loading process's pid into the image instead."""

    def __init__(self, n: int, pid: bool = False) -> None:
        self.n, self.pid = n, pid

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.pid:
            return torch.tensor([float(os.getpid())]), i
        return i + torch.rand(3), i


def old_epoch(batches: Batches, epoch: int, start: int = 0):
    """The earlier implementation: a new DataLoader over the epoch's remaining batches."""
    order, size = batches.order(epoch), batches.batch_size // batches.world_size
    indices = [order[i * size : (i + 1) * size] for i in range(start, batches.per_epoch)]
    loader = DataLoader(
        batches.dataset,
        batch_sampler=[i.tolist() for i in indices],
        num_workers=batches.num_workers,
    )
    yield from loader


# epochs in order, as a run iterates them: (epoch, first batch, batches taken before a break)
SCHEDULE = [(0, 0, None), (1, 0, 2), (2, 0, None), (1, 3, None), (3, 4, 1), (0, 0, None)]


def items(dataset: Dataset, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``dataset``'s items, drawn in order in this process (global RNG)."""
    out = []
    for index in batches:
        pairs = [dataset[int(i)] for i in index]
        out.append((torch.stack([x for x, _ in pairs]), torch.tensor([y for _, y in pairs])))
    return out


@pytest.mark.parametrize("seed, rank, world_size", [(0, 0, 1), (3, 0, 1), (5, 1, 2)])
def test_epochs_are_the_per_epoch_loaders_batches(seed: int, rank: int, world_size: int) -> None:
    """The per-epoch loaders' indices; the images are the items drawn in order from the global
    RNG, which nothing else draws from (so a checkpoint's RNG state resumes an epoch exactly);
    epochs whole, broken off or resumed mid-epoch, with one loader reused throughout."""
    dataset = Augmented(67)
    ours = Batches(dataset, 8, seed, rank=rank, world_size=world_size)
    reference = Batches(dataset, 8, seed, rank=rank, world_size=world_size)
    loaders = set()
    for epoch, start, take in SCHEDULE:
        old = [y for _, y in islice(old_epoch(reference, epoch, start), take)]
        torch.manual_seed(100 * epoch + start)
        expected = items(dataset, old)
        after = torch.get_rng_state()
        torch.manual_seed(100 * epoch + start)
        got = list(islice(ours.epoch(epoch, start), take))
        assert torch.equal(torch.get_rng_state(), after)
        assert len(got) == len(expected) == (take or ours.per_epoch - start)
        for (x, y), (x0, y0) in zip(got, expected, strict=True):
            assert torch.equal(y, y0) and torch.equal(x, x0)
        loaders.add(id(ours.loader))
    assert len(loaders) == 1


def test_the_workers_persist_across_epochs_and_stop_at_close() -> None:
    batches = Batches(Augmented(40, pid=True), 8, seed=1, num_workers=1)
    loader = batches.loader
    assert loader.persistent_workers
    pids, labels = set(), []
    for epoch, start, take in SCHEDULE:
        got = list(islice(batches.epoch(epoch, start), take))
        pids |= {int(p) for x, _ in got for p in x.flatten()}
        labels.append(torch.cat([y for _, y in got]))
    assert batches.loader is loader
    assert len(pids) == 1 and os.getpid() not in pids  # one worker, for every epoch
    reference = Batches(Augmented(40, pid=True), 8, seed=1)
    for (epoch, start, take), y in zip(SCHEDULE, labels, strict=True):
        expected = [y0 for _, y0 in islice(old_epoch(reference, epoch, start), take)]
        assert torch.equal(y, torch.cat(expected))
    batches.close()
    (pid,) = pids
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --------------------------------------------------------------------------- evaluation


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))


def _eval_sets() -> tuple[TensorDataset, Dataset]:
    """101 samples (shards of 50 and 51), labelled so that the model is right on about half."""
    x = torch.randn(101, 3, generator=torch.Generator().manual_seed(1))
    model = _model().eval()
    with torch.no_grad():
        y = model(x).argmax(-1)
    y[::2] = (y[::2] + 1) % 4
    tensors = TensorDataset(x, y)

    class Items(Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return x[i], int(y[i])

    return tensors, Items()


def test_evaluation_is_the_fraction_classified_correctly_with_or_without_workers() -> None:
    tensors, items = _eval_sets()
    model = _model().eval()
    with torch.no_grad():
        expected = (model(tensors.tensors[0]).argmax(-1) == tensors.tensors[1]).sum().item() / 101
    assert 0.3 < expected < 0.7
    assert evaluate(model, tensors, 16, "cpu") == expected
    evaluation = Evaluation(items, 16, num_workers=1)
    assert evaluation.accuracy(model, "cpu") == evaluation.accuracy(model, "cpu") == expected
    evaluation.close()


def _evaluate_as_rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = _model()
        if rank == 1:  # this rank's own BatchNorm statistics, as after a step on its shard
            model[2].running_mean += 3.0
        world = World(rank=rank, size=2)
        accuracies = [
            Evaluation(dataset, 16, world=world).accuracy(model, "cpu") for dataset in _eval_sets()
        ]
        torch.save(accuracies, f"{out}{rank}")
    finally:
        dist.destroy_process_group()


def test_every_rank_evaluates_its_shard_and_gets_the_single_process_accuracy(
    tmp_path: Path,
) -> None:
    mp.spawn(_evaluate_as_rank, args=(str(tmp_path / "store"), str(tmp_path / "rank")), nprocs=2)
    model = _model()
    expected = [evaluate(model, dataset, 16, "cpu") for dataset in _eval_sets()]
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}") == expected


# --------------------------------------------------------------------------- the trainer


def _cifar_config(root: Path, **changes: object) -> dict:
    data = {"name": "cifar10", "root": str(root), "verify_checksums": False}
    data |= {"batch_size": 8, "eval_batch_size": 50}
    record = {"every": 2, "jacobian": "never", "probe_size": 4, "flush_every": 2}
    config = {"data": data, "rule": {"name": "fa"}, "record": record, "epochs": 2}
    return tiny(**config | {"max_steps_per_epoch": 5, "checkpoint_every": 1} | changes)


def test_a_run_on_augmented_images_resumes_mid_epoch_bitwise(tmp_path: Path) -> None:
    """CIFAR-10 files, random crops and flips: a run stopped after step 3 of a 5-step epoch and
    resumed records exactly what the uninterrupted run records."""
    make_cifar(tmp_path / "data", per_batch=12)
    config = config_from_dict(_cifar_config(tmp_path / "data"))
    (reference,) = train(config, tmp_path / "reference", quiet=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", stop_after(3))
        with pytest.raises(KilledError):
            train(config, tmp_path / "stopped", quiet=True)
    resume(tmp_path / "stopped" / "seed0", quiet=True)
    ours, theirs = open_run(tmp_path / "stopped" / "seed0"), open_run(reference.run_dir)
    xr.testing.assert_identical(data_of(ours), data_of(theirs))


@pytest.mark.slow
def test_a_run_with_loader_workers_is_reproducible(tmp_path: Path) -> None:
    make_cifar(tmp_path / "data", per_batch=12)
    config = config_from_dict(_cifar_config(tmp_path / "data", checkpoint_every=0))
    config.data.num_workers = 1
    (a,) = train(config, tmp_path / "a", quiet=True)
    (b,) = train(config, tmp_path / "b", quiet=True)
    xr.testing.assert_identical(data_of(open_run(a.run_dir)), data_of(open_run(b.run_dir)))
