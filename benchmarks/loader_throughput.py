"""Images/s of the trainer's data loaders: training batches and the evaluation pass.

Two data sets, each made once in ``--data`` (default: a temp dir) and loaded through
:func:`alignment.data.load_dataset`, so the project's own transforms and file readers run:

* ``cifar``: a CIFAR-10-shaped set of random 3×32×32 uint8 images in the python batch-file
  layout (``--cifar-n`` training images before the 1:9 held-out split; train transform
  RandomCrop(32, 4) + flip + ToTensor + Normalize, evaluation on the held-out split);
* ``imagenet``: an ImageNet-shaped folder of JPEGs (``--imagenet-n`` training and a quarter as
  many validation images, 4 classes, 256-500 px smooth random images at quality 90; train
  transform RandomResizedCrop(224) + flip, validation Resize(256) + CenterCrop(224)).

For each set and worker count (default: the paper config's ``data.num_workers``, 0 for CIFAR-10
and 8 for ImageNet, plus 2), it times ``--epochs`` epochs of
:class:`alignment.training.batches.Batches` (every batch consumed, nothing trained) and as many
passes of the trainer's evaluation over the evaluation set (through a model that costs nothing:
global average pool + a 3→10 linear layer), epoch starts included, on CPU. ``1st batch s``:
the median wait for an epoch's first batch after the first epoch (where a per-epoch loader starts
its workers). It uses whichever
loader API the imported ``alignment`` has, so the same script measures an older tree (the
"before" numbers, ``PYTHONPATH=OLD_TREE``) and the current one::

    python benchmarks/loader_throughput.py                 # both sets, ~2 min on 2 idle cores
    python benchmarks/loader_throughput.py --quick         # smoke run
    python benchmarks/loader_throughput.py --data /tmp/loader-data --json after.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from alignment.data import load_dataset
from alignment.data.cifar10 import FOLDER, META_FILE, TEST_FILES, TRAIN_FILES
from alignment.training import batches as batches_module
from alignment.training.batches import Batches

CONFIGURED_WORKERS = {"cifar": 0, "imagenet": 8}  # the paper configs' data.num_workers
BATCH = {"cifar": (128, 1000), "imagenet": (64, 64)}  # (train, eval) batch sizes
CLASSES = ("n0", "n1", "n2", "n3")


def make_cifar(root: Path, n: int) -> None:
    """Five data batches of ``n / 5`` random images, a test batch and the meta file."""
    folder = root / FOLDER
    if (folder / META_FILE).exists():
        return
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*TRAIN_FILES, *TEST_FILES):
        count = n // 5 if name in TRAIN_FILES else 1000
        batch = {
            "data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, size=count)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)
    with open(folder / META_FILE, "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=4)


def make_imagenet(root: Path, n: int) -> None:
    """``root/{train,val}/<class>/*.JPEG``: smooth random RGB images, 256-500 px a side."""
    if (root / "val").exists():
        return
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", max(len(CLASSES), n // 4))):
        for i in range(count):
            folder = root / split / CLASSES[i % len(CLASSES)]
            folder.mkdir(parents=True, exist_ok=True)
            w, h = (int(v) for v in rng.integers(256, 501, size=2))
            coarse = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
            image.save(folder / f"img{i:05d}.JPEG", quality=90)


def _evaluator(dataset, batch_size: int, workers: int):
    """One evaluation pass per call, with the API the imported tree has (after: a persistent
    loader with workers; before: :func:`evaluate`, a new single-process loader per call)."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    if hasattr(batches_module, "Evaluation"):
        evaluation = batches_module.Evaluation(dataset, batch_size, num_workers=workers)
        return (lambda: evaluation.accuracy(model, "cpu")), evaluation.close
    return (lambda: batches_module.evaluate(model, dataset, batch_size, "cpu")), lambda: None


def measure(name: str, splits, workers: int, epochs: int) -> dict:
    """Images/s of ``epochs`` training epochs and evaluation passes, and each epoch's seconds."""
    train_batch, eval_batch = BATCH[name]
    batches = Batches(splits.train, train_batch, seed=0, num_workers=workers)
    train_seconds, first_batch = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        for i, _ in enumerate(batches.epoch(epoch)):
            if i == 0:
                first_batch.append(time.perf_counter() - start)
        train_seconds.append(time.perf_counter() - start)
    if hasattr(batches, "close"):
        batches.close()
    evaluate, close = _evaluator(splits.eval, eval_batch, workers)
    eval_seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        evaluate()
        eval_seconds.append(time.perf_counter() - start)
    close()
    n_train = batches.per_epoch * train_batch
    return {
        "set": name,
        "workers": workers,
        "train_images_per_s": n_train * epochs / sum(train_seconds),
        "eval_images_per_s": len(splits.eval) * epochs / sum(eval_seconds),
        "train_epoch_s": train_seconds,
        "first_batch_s": first_batch,
        "eval_pass_s": eval_seconds,
        "train_images": n_train,
        "eval_images": len(splits.eval),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="cifar,imagenet")
    parser.add_argument("--data", type=Path, default=None, help="where the sets are made/reused")
    parser.add_argument("--cifar-n", type=int, default=11_110, help="≈10k training images")
    parser.add_argument("--imagenet-n", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="*", default=[2], help="besides the config's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--quick", action="store_true", help="small sets, 2 epochs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.cifar_n, args.imagenet_n, args.epochs = 2_000, 64, 2
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    tmp = None if args.data else tempfile.TemporaryDirectory(prefix="loader-bench-")
    data = args.data or Path(tmp.name)
    results = []
    tree = Path(batches_module.__file__).parents[2]
    print(f"alignment from {tree}; load average {os.getloadavg()[0]:.2f}")
    print(
        f"{'set':9} {'workers':>7} {'train img/s':>12} {'eval img/s':>11} {'1st batch s':>11}"
        "  train epochs s"
    )
    for name in args.sets.split(","):
        if name == "cifar":
            make_cifar(data / "cifar", args.cifar_n)
            splits = load_dataset("cifar10", root=data / "cifar", verify_checksums=False)
        else:
            make_imagenet(data / "imagenet", args.imagenet_n)
            splits = load_dataset("imagenet", root=data / "imagenet")
        for workers in dict.fromkeys([CONFIGURED_WORKERS[name], *args.workers]):
            row = measure(name, splits, workers, args.epochs)
            results.append(row)
            epochs = " ".join(f"{s:.2f}" for s in row["train_epoch_s"])
            first = np.median(row["first_batch_s"][1:] or row["first_batch_s"])
            print(
                f"{name:9} {workers:>7} {row['train_images_per_s']:>12.0f} "
                f"{row['eval_images_per_s']:>11.0f} {first:>11.3f}  {epochs}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
