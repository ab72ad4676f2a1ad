"""CIFAR-10's python batch files, read without running any code they might carry.

The files (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``) are pickles
written by Python 2: dicts of ``str`` keys holding a uint8 array, lists of ints and strings.
``pickle.load`` (which torchvision's ``CIFAR10`` class uses) runs whatever a crafted file asks for,
so the files are never opened that way here:

1. With ``verify_checksums`` (the default) every file's md5 is compared with the original file's
   (torchvision's table) before any file is opened. A mismatch is refused: the file is damaged or
   was modified, and a modified file may be a crafted pickle. The fix is to restore the originals
   (``download: true`` downloads and extracts the archive again, checked by its own md5).
2. Every file — ``batches.meta`` first — is read by
   :func:`alignment.data.safe_pickle.restricted_load`, which admits only the globals a numpy
   array needs and refuses anything else before it runs, whether or not the checksums were
   verified (``verify_checksums: false`` only drops step 1, for re-packed copies and test
   fixtures).
3. Only then is the layout checked: ``data`` a uint8 array of shape (n, 3072), ``labels`` n ints in
   0..9, ``label_names`` ten names.

torchvision is used only to download the archive and for the md5 table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from alignment.data.safe_pickle import UnsafePickleError, restricted_load

FOLDER = "cifar-10-batches-py"
_TV = datasets.CIFAR10
TRAIN_FILES: tuple[str, ...] = tuple(f for f, _ in _TV.train_list)
TEST_FILES: tuple[str, ...] = tuple(f for f, _ in _TV.test_list)
META_FILE: str = _TV.meta["filename"]
FILES: tuple[str, ...] = (*TRAIN_FILES, *TEST_FILES, META_FILE)
MD5: dict[str, str] = {**dict(_TV.train_list), **dict(_TV.test_list), META_FILE: _TV.meta["md5"]}
"""The md5 of each original file (from torchvision)."""

ARCHIVE_MD5: str = _TV.tgz_md5


class CifarFileError(ValueError):
    """A CIFAR-10 file fails its md5 check or does not hold what the original files hold."""


def missing_files(folder: Path) -> list[str]:
    """The files of :data:`FILES` that are not in ``folder``."""
    return [f for f in FILES if not (folder / f).is_file()]


def modified_files(folder: Path) -> list[str]:
    """The files of :data:`FILES` whose md5 differs from the original's."""
    return [f for f in FILES if not check_integrity(str(folder / f), MD5[f])]


def download(root: Path, verify_checksums: bool) -> None:
    """Download and extract the archive into ``root`` unless the files are there (and, when
    ``verify_checksums``, unmodified); the archive itself is always checked by its md5."""
    folder = root / FOLDER
    if not missing_files(folder) and not (verify_checksums and modified_files(folder)):
        return
    download_and_extract_archive(_TV.url, str(root), filename=_TV.filename, md5=ARCHIVE_MD5)


def _plain_dict(obj: Any, path: Path) -> dict[str, Any]:
    """The unpickled dict with ``str`` keys (Python 2 ``str`` keys load as ``str`` with latin1,
    keys of a re-packed Python 3 file may be ``bytes``)."""
    if not isinstance(obj, dict):
        raise CifarFileError(f"{path} holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _load(path: Path) -> dict[str, Any]:
    """The file's dict, unpickled by the restricted unpickler; errors name the file."""
    try:
        obj = restricted_load(path, encoding="latin1")
    except UnsafePickleError:
        raise
    except Exception as e:  # whatever a malformed pickle makes the unpickler or numpy raise
        raise CifarFileError(f"{path} is not a readable pickle ({type(e).__name__}: {e})") from e
    return _plain_dict(obj, path)


def _read_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    entry = _load(path)
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise CifarFileError(f"{path}: 'data' is not a 2-d uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise CifarFileError(f"{path}: 'data' rows have {data.shape[1]} values, not 3072")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise CifarFileError(f"{path}: 'labels' is not a list of ints")
    if len(labels) != len(data):
        raise CifarFileError(f"{path}: {len(data)} images but {len(labels)} labels")
    if labels and not 0 <= min(labels) <= max(labels) < 10:
        raise CifarFileError(f"{path}: labels outside 0..9")
    return data, labels


def _read_meta(path: Path) -> list[str]:
    meta = _load(path)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise CifarFileError(f"{path}: 'label_names' is not a list of 10 names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def check(folder: Path, verify_checksums: bool) -> None:
    """Raise :class:`CifarFileError` if (with ``verify_checksums``) a file differs from the
    original. Missing files are the caller's to report (see :func:`missing_files`)."""
    if not verify_checksums:
        return
    modified = modified_files(folder)
    if modified:
        raise CifarFileError(
            f"{', '.join(modified)} in {folder} do not match the md5 of the original CIFAR-10 "
            "files: damaged or modified, and a modified file may be a pickle crafted to run "
            "code, so none was opened. Restore the original files: a download (below) replaces "
            f"them, or extract cifar-10-python.tar.gz (md5 {ARCHIVE_MD5}) into the root again"
        )


class CIFAR10Batches(Dataset):
    """One CIFAR-10 split read from the batch files: ``(PIL image or transform(image), label)``.

    Same items as torchvision's ``CIFAR10`` (``data`` is N×32×32×3 uint8, ``targets`` a list of
    ints, ``classes`` the label names), read through the restricted unpickler. Call
    :func:`check` first to verify the checksums.
    """

    def __init__(self, folder: Path, train: bool, transform: Callable | None = None) -> None:
        self.classes = _read_meta(folder / META_FILE)
        parts = [_read_batch(folder / f) for f in (TRAIN_FILES if train else TEST_FILES)]
        self.data = np.vstack([d for d, _ in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        self.targets = [v for _, labels in parts for v in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]
