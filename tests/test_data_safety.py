"""Data files that never run code, and image files that cannot be decoded.

Every payload here is live: each test also shows that the plain loader (``pickle.load``,
``torch.load(weights_only=False)``, ``yaml.unsafe_load``) runs it and creates the marker file,
so a test passes only because the project's loader refused the file.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from alignment.cli import main
from alignment.config import ConfigError, load_config
from alignment.data import DatasetNotFoundError, cifar10, load_dataset
from alignment.data.cifar10 import CIFAR10Batches, CifarFileError
from alignment.data.images import (
    ImageFiles,
    UnreadableImageWarning,
    load_rgb,
    signature_problem,
    unreadable_files,
)
from alignment.data.safe_pickle import UnsafePickleError, restricted_load
from alignment.sweeps.spec import load_spec
from alignment.training.checkpoint import CHECKPOINT, load_checkpoint
from tests.test_data import make_cifar, make_image_folder, write_py2_pickle


class System:
    """Unpickles to ``os.system(command)`` (pickled as the global ``posix.system``)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (self.command,))


class Exec:
    """Unpickles to ``exec(code)`` (pickled as ``__builtin__.exec`` under protocol 2)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (exec, (self.code,))


def payload(kind: str, marker: Path) -> object:
    if kind == "system":
        return System(f"touch {marker}")
    return Exec(f"open({str(marker)!r}, 'w').close()")


REFUSED = {"system": "posix.system", "exec": "__builtin__.exec"}


# --- CIFAR-10 -----------------------------------------------------------------------------------


def test_fixture_references_only_the_globals_of_the_original_files(tmp_path: Path) -> None:
    """The original batch files (Python 2, numpy 1.x, protocol 2) name exactly these globals;
    batches.meta names none. The tiny fixtures are written the same way."""
    make_cifar(tmp_path, per_batch=2, n_test=2)
    folder = tmp_path / "cifar-10-batches-py"

    def globals_of(name: str) -> list[str]:
        ops = pickletools.genops((folder / name).read_bytes())
        return [arg for op, arg, _ in ops if op.name in ("GLOBAL", "STACK_GLOBAL", "INST")]

    expected = ["numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"]
    assert globals_of("data_batch_1") == expected
    assert globals_of("batches.meta") == []


@pytest.mark.parametrize(
    ("target", "kind"),
    [("data_batch_1", "system"), ("batches.meta", "system"), ("test_batch", "exec")],
)
def test_cifar_payload_never_runs(tmp_path: Path, target: str, kind: str) -> None:
    make_cifar(tmp_path, per_batch=4, n_test=4)
    crafted = tmp_path / "cifar-10-batches-py" / target
    marker = tmp_path / "MARKER"
    # Shaped like the real file, the payload in place of one value.
    if target == "batches.meta":
        write_py2_pickle(crafted, {b"label_names": payload(kind, marker), b"num_vis": 3072})
    else:
        write_py2_pickle(crafted, {b"data": payload(kind, marker), b"labels": [0] * 4})
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path, verify_checksums=False)
    assert not marker.exists()
    message = str(info.value)
    assert f"{crafted} references the global {REFUSED[kind]}" in message
    assert "run code" in message and "restore the original files" in message
    assert isinstance(info.value.__cause__, UnsafePickleError)
    # With the checksums verified (the default) the file is not even opened.
    with pytest.raises(DatasetNotFoundError, match=f"{target}.* do not match the md5"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()
    # The payload is live: what torchvision's CIFAR10 does (pickle.load) runs it.
    with open(crafted, "rb") as f:
        pickle.load(f, encoding="latin1")
    assert marker.exists()


def test_cifar_payload_through_the_cli_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_cifar(tmp_path / "data", per_batch=4, n_test=4)
    crafted = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    marker = tmp_path / "MARKER"
    write_py2_pickle(crafted, {b"data": System(f"touch {marker}"), b"labels": [0] * 4})
    argv = ["train", "demo/pfa", "--out", str(tmp_path / "runs"), "--quiet"]
    argv += ["--set", "data.name=cifar10", "--set", f"data.root={tmp_path / 'data'}"]
    assert main([*argv, "--set", "data.verify_checksums=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignment: error: dataset 'cifar10'")
    assert f"{crafted} references the global posix.system" in err and "Traceback" not in err
    assert not marker.exists()


def test_restricted_unpickler(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    plain = {"a": [1, 2.5, b"x", "y", None, True, (3,)], b"k": {4}}
    path.write_bytes(pickle.dumps(plain, protocol=4))
    assert restricted_load(path) == plain
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for protocol in (3, 4):  # numpy 2's spelling (numpy._core) is admitted as well
        path.write_bytes(pickle.dumps({"data": array}, protocol=protocol))
        np.testing.assert_array_equal(restricted_load(path)["data"], array)
    marker = tmp_path / "MARKER"
    path.write_bytes(pickle.dumps([System(f"touch {marker}")], protocol=4))
    with pytest.raises(UnsafePickleError, match=r"references the global posix\.system") as info:
        restricted_load(path)
    assert (info.value.path, info.value.name) == (str(path), "posix.system")
    back = pickle.loads(pickle.dumps(info.value))
    assert (str(back), back.path, back.name) == (str(info.value), str(path), "posix.system")
    assert not marker.exists()
    # Another numpy callable is refused too: only what a pickled array needs is admitted.
    path.write_bytes(b"\x80\x02cnumpy\nload\nq\x00.")
    with pytest.raises(UnsafePickleError, match=r"numpy\.load"):
        restricted_load(path)


def test_cifar_repacked_by_python3_loads(tmp_path: Path) -> None:
    """A copy re-pickled by Python 3 and numpy 2 (bytes or str keys, numpy._core) loads."""
    make_cifar(tmp_path, per_batch=4, n_test=4)
    folder = tmp_path / "cifar-10-batches-py"
    original = CIFAR10Batches(folder, train=True)
    data = np.arange(4 * 3072, dtype=np.uint8).reshape(4, 3072) % 251
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({"data": data, "labels": [1, 2, 3, 4]}, f, protocol=4)
    repacked = CIFAR10Batches(folder, train=True)
    np.testing.assert_array_equal(repacked.data[4:8].transpose(0, 3, 1, 2).reshape(4, -1), data)
    assert repacked.targets[4:8] == [1, 2, 3, 4] and repacked.targets[:4] == original.targets[:4]
    assert repacked.classes[0] == "airplane" and len(repacked) == 20


def test_cifar_download_restores_missing_or_modified_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``download: true`` fetches the archive (checked by its md5) when files are missing, or,
    with checksums verified, modified; intact files are not fetched again."""
    calls: list[str] = []

    def fake_download(url: str, root: str, filename: str, md5: str) -> None:
        calls.append(md5)
        shutil.rmtree(Path(root) / "cifar-10-batches-py", ignore_errors=True)
        make_cifar(Path(root), per_batch=4, n_test=4)

    monkeypatch.setattr(cifar10, "download_and_extract_archive", fake_download)
    assert len(load_dataset("cifar10", root=tmp_path, download=True, verify_checksums=False).train)
    assert calls == [cifar10.ARCHIVE_MD5]
    load_dataset("cifar10", root=tmp_path, download=True, verify_checksums=False)
    assert len(calls) == 1  # present: not fetched again
    with pytest.raises(DatasetNotFoundError, match="do not match the md5"):
        load_dataset("cifar10", root=tmp_path, download=True)  # tiny files are "modified"
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is not a readable pickle"),
        (pickle.dumps([1, 2]), "holds a list, not a dict"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.float32)}), "not a 2-d uint8 array"),
        (pickle.dumps({"data": np.zeros((2, 5), np.uint8)}), "not 3072"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}), "2 images but 1"),
        (pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [10]}), "outside 0..9"),
    ],
)
def test_cifar_malformed_batch_names_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    make_cifar(tmp_path, per_batch=2, n_test=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(content)
    with pytest.raises(DatasetNotFoundError, match=match) as info:
        load_dataset("cifar10", root=tmp_path, verify_checksums=False)
    assert "data_batch_3" in str(info.value)
    assert isinstance(info.value.__cause__, CifarFileError)


# --- ImageNet folders ---------------------------------------------------------------------------


def jpeg_bytes(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def test_imagenet_non_image_file_is_named_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_image_folder(tmp_path, {"n01": (["a.png", "b.png"], ["c.png"]), "n02": (["d.png"], [])})
    (tmp_path / "val" / "n02" / "e.JPEG").write_bytes(jpeg_bytes())
    # ILSVRC-2012 quirk: a PNG named .JPEG is an image all the same.
    png = tmp_path / "train" / "n02" / "png_named.JPEG"
    png.write_bytes((tmp_path / "train" / "n01" / "a.png").read_bytes())
    assert load_dataset("imagenet", root=tmp_path).train[3][0].shape == (3, 224, 224)
    bad = tmp_path / "train" / "n01" / "page.JPEG"
    bad.write_bytes(b"<!DOCTYPE html><html>403 Forbidden</html>")
    empty = tmp_path / "val" / "n01" / "empty.JPEG"
    empty.write_bytes(b"")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("imagenet", root=tmp_path)
    message = str(info.value)
    assert "2 of 8 files are not images" in message and "nothing was trained" in message
    assert f"{bad} (not a JPEG/PNG/PPM/BMP/TIFF/WEBP image (starts with b'<!DOCTYP'))" in message
    assert f"{empty} (empty)" in message and str(png) not in message
    argv = ["train", "demo/pfa", "--out", str(tmp_path / "runs"), "--quiet"]
    argv += ["--set", "data.name=imagenet", "--set", f"data.root={tmp_path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignment: error: dataset 'imagenet'") and str(bad) in err


def test_other_formats_are_never_decoded(tmp_path: Path) -> None:
    """PIL picks a decoder by content, and its EPS decoder runs Ghostscript: a .JPEG holding
    PostScript is refused up front and by the loader."""
    eps = tmp_path / "x.JPEG"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with Image.open(eps) as image:  # a plain PIL.Image.open would decode it as EPS
        assert image.format == "EPS"
    assert signature_problem(eps) is not None and unreadable_files([str(eps)]) != []
    with pytest.raises(Image.UnidentifiedImageError):
        load_rgb(str(eps))
    assert signature_problem(tmp_path / "missing.JPEG") is not None


def test_truncated_image_is_skipped_with_a_warning(tmp_path: Path) -> None:
    make_image_folder(tmp_path, {"n01": (["a.png", "b.png"], ["c.png"]), "n02": (["d.png"], [])})
    (tmp_path / "val" / "n02" / "e.png").write_bytes(
        (tmp_path / "val" / "n01" / "c.png").read_bytes()
    )
    truncated = tmp_path / "train" / "n01" / "b.png"
    truncated.write_bytes(jpeg_bytes()[:300])  # passes the signature check, fails to decode
    splits = load_dataset("imagenet", root=tmp_path)
    train = splits.train
    assert isinstance(train, ImageFiles) and len(train) == 3
    with pytest.warns(UnreadableImageWarning, match=f"skipped {truncated}: it cannot be decoded"):
        batches = list(DataLoader(train, batch_size=3))
    assert len(batches) == 1 and batches[0][0].shape == (3, 3, 224, 224)
    assert batches[0][1].tolist() == [0, 1, 1]  # b.png (class n01) replaced by d.png (n02)
    assert train.skipped == {str(truncated)}
    list(DataLoader(train, batch_size=3))  # warned once per file: no second warning (error filter)
    # Nothing decodable at all is an error naming the folder, not an endless loop.
    for path, _ in train.samples:
        Path(path).write_bytes(b"\xff\xd8\xff" + b"\0" * 20)
    with (
        pytest.warns(UnreadableImageWarning),
        pytest.raises(DatasetNotFoundError, match="in a row"),
    ):
        train[0]


# --- every other file a user hands in -----------------------------------------------------------


def test_checkpoint_payload_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    torch.save({"model": System(f"touch {marker}")}, tmp_path / CHECKPOINT)
    # torch's weights-only unpickler refuses it (pickle.UnpicklingError), or a wrapper of it.
    with pytest.raises((pickle.UnpicklingError, ValueError, RuntimeError, OSError)):
        load_checkpoint(tmp_path)
    assert not marker.exists()
    torch.load(tmp_path / CHECKPOINT, weights_only=False)  # the payload is live
    assert marker.exists()


@pytest.mark.parametrize("kind", ["config", "sweep spec"])
def test_yaml_python_tags_are_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "x.yaml"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path) if kind == "config" else load_spec(path)
    assert not marker.exists()
    yaml.unsafe_load(path.read_text())  # the payload is live
    assert marker.exists()
