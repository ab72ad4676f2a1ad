"""Dataset registry: tiny files written in the real on-disk formats, loaded through load_dataset.

MNIST / Fashion-MNIST: uncompressed big-endian idx files under <root>/<Class>/raw. CIFAR-10: the
python-version batch files, pickled the way the originals are (Python 2 ``str`` keys, so they load
with ``encoding="latin1"`` as torchvision does and with ``encoding="bytes"`` as ``b"data"`` …).
ImageNet: an ImageFolder tree of small PNGs. Nothing is downloaded.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from alignment.data import DATASETS, DatasetNotFoundError, DatasetSplits, load_dataset
from alignment.data.registry import CIFAR10_MEAN, CIFAR10_STD, cifar10_val_size

DOWNLOAD_HINT = "download: true"
ROOT_HINT = "data.root"

# --- writers for the real formats ---------------------------------------------------------------


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """idx3-ubyte: magic 2051, then N, rows, cols as big-endian int32, then the uint8 pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">iiii", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """idx1-ubyte: magic 2049, then N as big-endian int32, then the uint8 labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def make_mnist(root: Path, folder: str, n_train: int = 20, n_test: int = 10) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx_images(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
        out[prefix] = (images, labels)
    return out


class Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as the CIFAR files
    (pickled by Python 2's cPickle) contain them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


# numpy 2 names its array reconstructor numpy._core.multiarray._reconstruct; the original files,
# pickled under numpy 1.x, name it numpy.core.multiarray._reconstruct (GLOBAL: newline-ended text).
NUMPY2_RECONSTRUCT = b"cnumpy._core.multiarray\n_reconstruct\n"
NUMPY1_RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"


def write_py2_pickle(path: Path, obj: object) -> None:
    """Protocol 2, Python 2 strings and numpy 1.x global names, as in the original files."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue().replace(NUMPY2_RECONSTRUCT, NUMPY1_RECONSTRUCT))


def make_cifar(root: Path, per_batch: int = 10, n_test: int = 10) -> dict[str, np.ndarray]:
    """data_batch_1..5 (``per_batch`` images each), test_batch and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        write_py2_pickle(folder / name, batch)
        if name != "test_batch":
            train.append(data)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    write_py2_pickle(folder / "batches.meta", meta)
    return {"train": np.concatenate(train)}


def make_image_folder(root: Path, classes: dict[str, tuple[list[str], list[str]]]) -> None:
    """root/train/<class>/*.png and root/val/<class>/*.png; ``classes[c] = (train, val) names``."""
    rng = np.random.default_rng(2)
    for cls, splits in classes.items():
        for split, files in zip(("train", "val"), splits, strict=True):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f)


def assert_helpful(err: BaseException, dataset: str, layout: str, root: Path | None) -> None:
    msg = str(err)
    assert isinstance(err, DatasetNotFoundError) and isinstance(err, FileNotFoundError)
    assert repr(dataset) in msg
    assert layout in msg
    assert "Expected layout" in msg
    assert ROOT_HINT in msg
    if dataset != "imagenet":
        assert DOWNLOAD_HINT in msg and "--set data.download=true" in msg
    if root is not None:
        assert str(root.resolve()) in msg


# --- embedded datasets ---------------------------------------------------------------------------


def test_mnist5k_sizes_shapes_and_determinism() -> None:
    a = load_dataset("mnist5k")
    assert isinstance(a, DatasetSplits)
    assert isinstance(a.train, TensorDataset) and isinstance(a.eval, TensorDataset)
    assert (len(a.train), len(a.eval)) == (4000, 1000)
    assert (a.num_classes, a.input_shape, a.eval_name) == (10, (1, 28, 28), "test")
    x, y = a.train.tensors
    assert x.shape == (4000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    b = load_dataset("mnist5k")
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.eval.tensors[1], b.eval.tensors[1])


def test_digits_sizes_normalisation_and_split_seed() -> None:
    a = load_dataset("digits")
    assert isinstance(a.train, TensorDataset) and isinstance(a.eval, TensorDataset)
    assert (len(a.train), len(a.eval)) == (1437, 360)
    assert (a.num_classes, a.input_shape, a.eval_name) == (10, (1, 8, 8), "test")
    x, y = a.train.tensors
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-5
    assert set(y.tolist()) == set(range(10))
    b = load_dataset("digits", split_seed=0)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.eval.tensors[1], b.eval.tensors[1])
    c = load_dataset("digits", split_seed=1)
    assert not torch.equal(a.eval.tensors[1], c.eval.tensors[1])


# --- MNIST / Fashion-MNIST idx files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder", "mean", "std"),
    [("mnist", "MNIST", 0.1307, 0.3081), ("fashion_mnist", "FashionMNIST", 0.2860, 0.3530)],
)
def test_mnist_like_idx_files(
    tmp_path: Path, name: str, folder: str, mean: float, std: float
) -> None:
    raw = make_mnist(tmp_path, folder, n_train=20, n_test=10)
    splits = load_dataset(name, root=tmp_path)
    assert (len(splits.train), len(splits.eval)) == (20, 10)
    assert (splits.num_classes, splits.input_shape, splits.eval_name) == (10, (1, 28, 28), "test")
    for ds, (images, labels) in ((splits.train, raw["train"]), (splits.eval, raw["t10k"])):
        for i in (0, 7):
            x, y = ds[i]
            assert x.shape == (1, 28, 28) and x.dtype == torch.float32
            assert isinstance(y, int) and y == int(labels[i])
            expected = (images[i, 3, 5] / 255.0 - mean) / std
            assert float(x[0, 3, 5]) == pytest.approx(expected, abs=1e-5)


def test_mnist_wrong_layout_names_missing_files(tmp_path: Path) -> None:
    make_mnist(tmp_path / "raw_only", "")  # files in <root>/raw, not <root>/MNIST/raw
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path / "raw_only")
    layout = "<root>/MNIST/raw/train-images-idx3-ubyte"
    assert_helpful(info.value, "mnist", layout, tmp_path / "raw_only")
    assert "missing train-images-idx3-ubyte" in str(info.value)
    # Fashion-MNIST files do not satisfy MNIST, and vice versa.
    make_mnist(tmp_path / "f", "FashionMNIST")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path / "f")
    assert "<root>/MNIST/raw/t10k-labels-idx1-ubyte" in str(info.value)


def test_mnist_malformed_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    make_mnist(tmp_path, "MNIST")
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.zeros(9))  # 10 images, 9 labels
    with pytest.raises(DatasetNotFoundError, match="10 images but 9 labels") as info:
        load_dataset("mnist", root=tmp_path)
    assert_helpful(info.value, "mnist", "<root>/MNIST/raw/train-images-idx3-ubyte", tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(DatasetNotFoundError, match="could not be read"):
        load_dataset("mnist", root=tmp_path)


# --- CIFAR-10 python batches ---------------------------------------------------------------------


def test_cifar10_split_transforms_and_determinism(tmp_path: Path) -> None:
    raw = make_cifar(tmp_path, per_batch=10, n_test=10)["train"]
    a = load_dataset("cifar10", root=tmp_path, verify_checksums=False)
    assert cifar10_val_size(50) == 5 and cifar10_val_size(50_000) == 5000
    assert (len(a.train), len(a.eval)) == (45, 5)
    assert (a.num_classes, a.input_shape, a.eval_name) == (10, (3, 32, 32), "val")
    train_idx, val_idx = set(a.train.indices), set(a.eval.indices)
    assert not train_idx & val_idx and train_idx | val_idx == set(range(50))
    b = load_dataset("cifar10", root=tmp_path, verify_checksums=False, split_seed=0)
    assert b.eval.indices == a.eval.indices
    c = load_dataset("cifar10", root=tmp_path, verify_checksums=False, split_seed=1)
    assert c.eval.indices != a.eval.indices
    x, y = a.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    # Validation images are not augmented: exactly ToTensor + Normalize of the stored pixels.
    x, y = a.eval[0]
    chw = raw[a.eval.indices[0]].reshape(3, 32, 32) / 255.0
    mean, std = np.array(CIFAR10_MEAN)[:, None, None], np.array(CIFAR10_STD)[:, None, None]
    np.testing.assert_allclose(x.numpy(), (chw - mean) / std, atol=1e-5)
    assert 0 <= y < 10
    t = load_dataset("cifar10", root=tmp_path, verify_checksums=False, eval_split="test")
    assert (len(t.train), len(t.eval), t.eval_name) == (45, 10, "test")
    assert t.eval[3][0].shape == (3, 32, 32)
    # Picklable (DataLoader workers under spawn/forkserver) and batchable by the default collate.
    clone = pickle.loads(pickle.dumps(a.train))
    assert len(clone) == 45 and clone[1][0].shape == (3, 32, 32)
    xb, yb = next(iter(DataLoader(a.eval, batch_size=4)))
    assert xb.shape == (4, 3, 32, 32) and yb.dtype == torch.int64


def test_cifar10_checksums_and_layout_errors(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="do not match the md5") as info:
        load_dataset("cifar10", root=tmp_path)  # tiny files fail the originals' md5
    layout = "<root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta"
    assert_helpful(info.value, "cifar10", layout, tmp_path)
    # The message explains the risk and how to restore the files; it never suggests the switch.
    assert "crafted to run code" in str(info.value) and "verify_checksums" not in str(info.value)
    # Pointing root at cifar-10-batches-py itself instead of its parent.
    with pytest.raises(DatasetNotFoundError, match="missing data_batch_1") as info:
        load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py", verify_checksums=False)
    assert_helpful(info.value, "cifar10", layout, tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing batches\.meta"):
        load_dataset("cifar10", root=tmp_path, verify_checksums=False)


# --- ImageNet folder tree ------------------------------------------------------------------------


def test_imagenet_image_folder(tmp_path: Path) -> None:
    make_image_folder(
        tmp_path,
        {"n01": (["a.png", "b.png"], ["c.png"]), "n02": (["d.png", "e.png"], ["f.png"])},
    )
    s = load_dataset("imagenet", root=tmp_path)
    assert (len(s.train), len(s.eval)) == (4, 2)
    assert (s.num_classes, s.input_shape, s.eval_name) == (2, (3, 224, 224), "val")
    for ds in (s.train, s.eval):
        x, y = ds[len(ds) - 1]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1


def test_imagenet_layout_errors(tmp_path: Path) -> None:
    layout = "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG"
    make_image_folder(tmp_path / "flat", {"n01": (["a.png"], [])})
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "val" / "x.png")  # flat val: no classes
    (tmp_path / "flat" / "val" / "n01").rmdir()
    with pytest.raises(DatasetNotFoundError, match="no class subfolders") as info:
        load_dataset("imagenet", root=tmp_path / "flat")
    assert_helpful(info.value, "imagenet", layout, tmp_path / "flat")
    assert "cannot be downloaded" in str(info.value)
    make_image_folder(tmp_path / "diff", {"n01": (["a.png"], ["b.png"]), "n02": (["c.png"], [])})
    (tmp_path / "diff" / "val" / "n02").rmdir()
    with pytest.raises(DatasetNotFoundError, match="differ") as info:
        load_dataset("imagenet", root=tmp_path / "diff")
    assert "only in train: ['n02']" in str(info.value)
    make_image_folder(tmp_path / "noval", {"n01": (["a.png"], [])})
    (tmp_path / "noval" / "val" / "n01").rmdir()
    (tmp_path / "noval" / "val").rmdir()
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("imagenet", root=tmp_path / "noval")
    make_image_folder(tmp_path / "empty", {"n01": (["a.png"], [])})
    (tmp_path / "empty" / "val" / "n01" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetNotFoundError, match="could not be read"):
        load_dataset("imagenet", root=tmp_path / "empty")


def test_imagenet_download_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be downloaded") as info:
        load_dataset("imagenet", root=tmp_path, download=True)
    assert "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG" in str(info.value)
    assert ROOT_HINT in str(info.value)


# --- generic errors ------------------------------------------------------------------------------

LAYOUTS = {
    "mnist": "<root>/MNIST/raw/train-images-idx3-ubyte",
    "fashion_mnist": "<root>/FashionMNIST/raw/train-images-idx3-ubyte",
    "cifar10": "<root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta",
    "imagenet": "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG",
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_missing_root(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name)
    assert_helpful(info.value, name, LAYOUTS[name], None)
    assert "data.root is unset" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="does not exist") as info:
        load_dataset(name, root=tmp_path / "nowhere")
    assert_helpful(info.value, name, LAYOUTS[name], tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, root=tmp_path)  # exists, but empty
    assert_helpful(info.value, name, LAYOUTS[name], tmp_path)


def test_unknown_dataset_and_eval_split() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'") as info:
        load_dataset("cifar100")
    for name in DATASETS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="choose from test"):
        load_dataset("mnist5k", eval_split="val")
    with pytest.raises(ValueError, match="choose from val, test"):
        load_dataset("cifar10", eval_split="train")


def test_error_survives_pickling() -> None:
    err = DatasetNotFoundError("msg", "mnist", "/x")
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.dataset, back.root) == ("msg", "mnist", "/x")
