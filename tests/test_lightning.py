"""The Lightning callback: a real ``lightning.Trainer`` on CPU, with
:class:`~alignment.integrations.lightning.AlignmentCallback`, gives the record of the plain loop
with :class:`alignment.Recorder` on the same seed and batches (test accuracy included)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import alignment
from alignment.integrations.lightning import AlignmentCallback
from alignment.recording import schedules
from alignment.recording.schema import TIMINGS

EPOCHS, BATCHES, BATCH = 2, 3, 16
OPTIONS = {
    "schedule": schedules.every(1),
    "jacobian_schedule": schedules.every(2),
    "seed": 0,
    "min_records": 0,
}

# Lightning 2.6 warns about the data loaders' workers, and its pytree helper uses a LeafSpec that
# torch 2.14 deprecates (a FutureWarning from inside Lightning, nothing the callback does).
pytestmark = [
    pytest.mark.filterwarnings("ignore::lightning.pytorch.utilities.warnings.PossibleUserWarning"),
    pytest.mark.filterwarnings(
        r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
    ),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data() -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(3)
    train = TensorDataset(
        torch.randn(BATCHES * BATCH, 20, generator=g),
        torch.randint(0, 4, (BATCHES * BATCH,), generator=g),
    )
    test = TensorDataset(torch.randn(40, 20, generator=g), torch.randint(0, 4, (40,), generator=g))
    return train, test


def network(rule: str) -> nn.Module:
    torch.manual_seed(0)
    return alignment.convert(nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4)), rule)


def optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)


class Classifier(pl.LightningModule):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.model = network(rule)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self.model(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return optimizer(self.parameters())


def lightning_run(
    run_dir: Path, rule: str, epochs: int = EPOCHS, checkpoints: Path | None = None
) -> None:
    """Fit :class:`Classifier` for ``epochs`` epochs; with ``checkpoints``, Lightning saves its
    checkpoint there after each epoch and the fit continues from ``last.ckpt`` if it exists."""
    train, test = data()
    callbacks: list[pl.Callback] = [AlignmentCallback(run_dir, **OPTIONS)]
    if checkpoints is not None:
        callbacks.append(pl.callbacks.ModelCheckpoint(checkpoints, save_last=True))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=checkpoints is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    last = None if checkpoints is None else checkpoints / "last.ckpt"
    trainer.fit(
        Classifier(rule),
        DataLoader(train, batch_size=BATCH),
        DataLoader(test, batch_size=len(test)),
        ckpt_path=last if last is not None and last.exists() else None,
    )


def plain_run(run_dir: Path, rule: str) -> None:
    train, test = data()
    model = network(rule)
    opt = optimizer(model.parameters())
    x_test, y_test = test.tensors
    with alignment.Recorder(
        model, run_dir, optimizer=opt, steps_per_epoch=BATCHES, **OPTIONS
    ) as rec:
        for epoch in range(EPOCHS):
            model.train()
            for x, y in DataLoader(train, batch_size=BATCH):
                rec.step(x, y, epoch=epoch)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                rec.log(test_accuracy=(model(x_test).argmax(1) == y_test).float().mean().item())


def without_timings(ds: xr.Dataset) -> xr.Dataset:
    out = ds.drop_vars(TIMINGS)
    out.attrs = {k: v for k, v in ds.attrs.items() if k not in ("start_time", "git_sha")}
    return out


@pytest.mark.parametrize("rule", ["pfa", "dfa"])
def test_the_callback_records_what_the_plain_loop_records(tmp_path: Path, rule: str) -> None:
    lightning_run(tmp_path / "lightning", rule)
    plain_run(tmp_path / "plain", rule)
    lit, plain = alignment.open_run(tmp_path / "lightning"), alignment.open_run(tmp_path / "plain")
    assert list(lit.step.values) == list(range(EPOCHS * BATCHES + 1))
    assert lit.test_accuracy.count() == EPOCHS and lit.feedback_alignment.count() > 0
    xr.testing.assert_identical(without_timings(lit), without_timings(plain))


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
def test_a_fit_continued_from_a_checkpoint_continues_the_record(tmp_path: Path) -> None:
    lightning_run(tmp_path / "lightning", "pfa", epochs=1, checkpoints=tmp_path / "ckpt")
    lightning_run(tmp_path / "lightning", "pfa", epochs=EPOCHS, checkpoints=tmp_path / "ckpt")
    plain_run(tmp_path / "plain", "pfa")
    lit, plain = alignment.open_run(tmp_path / "lightning"), alignment.open_run(tmp_path / "plain")
    assert lit.test_accuracy.count() == EPOCHS
    xr.testing.assert_identical(without_timings(lit), without_timings(plain))
