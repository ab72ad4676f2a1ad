"""Segment manifests: what each zarr group of a record holds, checked whenever it is read.

Every group :mod:`alignment.recording.store` writes (a records or compact segment, the static
part) carries a manifest in the attributes of its own ``zarr.json`` (key ``_alignment_manifest``,
removed from the Dataset a reader gets): every other file of the group with its size and its
CRC-32C, and the steps it holds. Every chunk is also stored through zarr's ``crc32c`` codec, so
zarr verifies each chunk whenever it decodes it. A read checks that every listed file is there
with its size, and the checksums of the metadata files (small); :func:`problems` with
``data=True`` (``alignment verify``) also checks the checksum of every chunk file.

Records written before manifests existed have none; they stay readable, unchecked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

KEY = "_alignment_manifest"
FORMAT = 1


class DamagedRecordError(ValueError):
    """A record file that is missing, truncated, altered or unreadable. The message names the
    file and the commands that list every problem and repair the record."""

    def __init__(self, problem: str, run_dir: str | os.PathLike | None = None) -> None:
        run = run_dir if run_dir is not None else run_of(problem.split(": ", 1)[0])
        super().__init__(f"{problem} (damaged record; {hint(run)})")
        self.problem, self.run_dir = problem, run

    def __reduce__(self) -> tuple:  # pickled as its arguments (e.g. from a worker process)
        return type(self), (self.problem, self.run_dir)


def run_of(path: str | os.PathLike) -> Path:
    """The run directory of a path inside its ``record.zarr`` (the path itself if none)."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.name == "record.zarr":
            return parent.parent
    return path


def hint(run_dir: str | os.PathLike) -> str:
    """The commands that list every problem of a run's record and keep its intact part."""
    return (
        f"`alignment verify {run_dir}` lists every problem, `alignment repair {run_dir}` "
        "keeps the intact part"
    )


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


def build(files: dict[str, bytes], steps: np.ndarray | None) -> dict[str, Any]:
    """The manifest of a group whose files (zarr keys → bytes, the group's ``zarr.json``
    excluded) are ``files``; ``steps``: the values of its step coordinate, if any."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "files": {key: [len(data), crc32c(data)] for key, data in sorted(files.items())},
    }
    if steps is not None:
        values = np.asarray(steps).tolist()
        manifest["steps"] = [values[0], values[-1], len(values)] if values else [None, None, 0]
    return manifest


def with_manifest(group_meta: bytes, files: dict[str, bytes], steps: np.ndarray | None) -> bytes:
    """The group's ``zarr.json`` with the manifest of ``files`` added to its attributes."""
    meta = json.loads(group_meta)
    meta.setdefault("attributes", {})[KEY] = build(files, steps)
    return json.dumps(meta, indent=2).encode()


def read_json(path: Path) -> Any:
    """A JSON file; :class:`DamagedRecordError` naming it if it is missing or not JSON."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError as error:
        raise DamagedRecordError(f"{path}: missing") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise DamagedRecordError(f"{path}: not valid JSON ({error})") from error


def load(group: Path) -> dict[str, Any] | None:
    """The manifest of ``group`` (None if it was written without one)."""
    meta_path = group / "zarr.json"
    meta = read_json(meta_path)
    attributes = meta.get("attributes") if isinstance(meta, dict) else None
    if not isinstance(attributes, dict):
        raise DamagedRecordError(f"{meta_path}: not a zarr group's metadata")
    manifest = attributes.get(KEY)
    if manifest is None:
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(n, int) for n in v)
        for v in files.values()
    ):
        raise DamagedRecordError(f"{meta_path}: its manifest ({KEY}) is malformed")
    return manifest


def problems(group: Path, *, required: bool, data: bool = False) -> list[str]:
    """What is wrong with ``group`` according to its manifest, one ``"FILE: what"`` per problem.

    Checks that every listed file is there with its size and that the metadata files have
    their checksums; ``data=True`` checks the chunk files' checksums too (reads them all).
    ``required``: a group without a manifest is a problem (the record was written with them).
    """
    if not group.is_dir():
        return [f"{group}: missing"]
    try:
        manifest = load(group)
    except DamagedRecordError as error:
        return [error.problem]
    if manifest is None:
        return [f"{group / 'zarr.json'}: no manifest ({KEY})"] if required else []
    found = []
    for key, (size, checksum) in manifest["files"].items():
        path = group.joinpath(*key.split("/"))
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            found.append(f"{path}: missing")
            continue
        if actual != size:
            found.append(f"{path}: {actual} bytes, written with {size}")
        elif (data or key.endswith("zarr.json")) and crc32c(path.read_bytes()) != checksum:
            found.append(f"{path}: checksum mismatch (altered since it was written)")
    return found


def check(group: Path, *, required: bool) -> None:
    """Raise :class:`DamagedRecordError` naming the first problem :func:`problems` finds."""
    found = problems(group, required=required)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DamagedRecordError(found[0] + more)
