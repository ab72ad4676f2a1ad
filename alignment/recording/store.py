"""Crash-safe, append-only storage of a run: a log of zarr segments under ``run_dir/record.zarr``.

Layout (every segment is a complete zarr v3 group, so the whole directory is one zarr hierarchy)::

    record.zarr/
        zarr.json                    root group
        static/                      run-level data: probe_input, probe_label, bbt_eigenvalues,
                                     the layer coordinate, and the run attrs (config, rule, seed, …)
        main/                        the log of per-step records (dim ``step``)
            00000000/                records segment: the records of one flush
            00000001/
            00000002.truncate.json   "drop every step ≥ s written before this entry" (resume)
            00000003.compact/        everything before it, rewritten as one segment
            …
        raw/                         the same log for raw tensors (dim ``raw_step``)

Why a log of segments rather than zarr's own append: appending to a zarr array resizes each
array's metadata and writes its new chunks separately, so a crash in the middle of an append
leaves arrays of different lengths (or chunks that metadata does not cover) and an unreadable
Dataset. Here every write goes to a hidden temporary directory (``.tmp-…``) and becomes visible
with one ``os.rename`` — atomic on POSIX — so a reader sees either the whole segment or none of it.
A SIGKILL, a Ctrl-C or a full disk therefore loses at most the records not yet flushed, and what
was written stays readable. Readers ignore hidden entries; the next writer removes them.

Reading replays the log in sequence order: record segments are concatenated along the step dim,
a truncation drops the steps ≥ its step from everything before it, and a compact segment replaces
everything before it (the older entries it covers are deleted after it is in place; if a crash
interrupts that deletion, readers still ignore them). ``close()`` and resumption compact the log.
Reads are eager (numpy) or, with ``lazy=True``, dask-backed: each numeric variable of a segment
becomes one dask chunk whose task reads its zarr array when computed, so opening reads only
metadata and coordinates (see :func:`read_zarr`).

(Durability against power loss would additionally need fsync of every file and directory; a
process crash, which is what this protects against, leaves the kernel's page cache intact.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.storage import MemoryStore

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no writer lock
    fcntl = None  # type: ignore[assignment]

RECORD = "record.zarr"
STATIC = "static"
KINDS = {"main": "step", "raw": "raw_step"}
"""Log name → the dim its segments are concatenated along."""

CLOSED = "CLOSED"
"""Marker file in ``record.zarr``: the recorder was closed normally (the run finished)."""
WRITER_LOCK = ".lock"
"""Lock file in ``record.zarr``, held (``flock``) by the process recording into it."""

_ENTRY = re.compile(r"^(\d{8})(\.compact|\.truncate\.json)?$")
_ROOT_META = {"zarr_format": 3, "node_type": "group", "attributes": {}}


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str  # "records" | "compact" | "truncate"
    path: Path


def run_path(run_dir: str | os.PathLike) -> Path:
    """The run directory, also when given the ``record.zarr`` inside it."""
    path = Path(run_dir)
    return path.parent if path.name == RECORD else path


def _strings_as_objects(ds: xr.Dataset) -> xr.Dataset:
    """Unicode variables as object arrays: zarr v3 stores those as its (specified) vlen string."""
    ds = ds.copy()
    for name, var in ds.variables.items():
        if var.dtype.kind in "UT":
            ds[name] = var.copy(data=np.asarray(var.values, dtype=object))
        ds[name].encoding = {}
    return ds


def _strings_as_unicode(ds: xr.Dataset) -> xr.Dataset:
    """numpy StringDType (what zarr v3 reads) back to plain unicode arrays."""
    for name, var in ds.variables.items():
        if var.dtype.kind in "OT":
            ds[name] = var.copy(
                data=np.array([str(v) for v in np.ravel(var.values)], dtype=str).reshape(var.shape)
            )
    return ds


def write_zarr(ds: xr.Dataset, path: Path) -> None:
    """Write ``ds`` as a zarr v3 group at ``path`` atomically (temporary directory + rename).

    The group is encoded into a :class:`zarr.storage.MemoryStore` and its keys written as the
    files a ``LocalStore`` would hold (key ``a/b`` → file ``a/b``): one round trip through zarr's
    event loop instead of one per array and file, about half the time of a direct write.
    """
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    contents: dict = {}
    _strings_as_objects(ds).to_zarr(
        MemoryStore(contents), mode="w-", zarr_format=3, consolidated=False
    )
    try:
        for key, buffer in contents.items():
            target = tmp.joinpath(*key.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(buffer.to_bytes())
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_array(segment: str, name: str) -> np.ndarray:
    """The values of array ``name`` of a segment (a task of a lazy segment's dask graph)."""
    import zarr

    return np.asarray(zarr.open_array(store=segment, path=name, mode="r", zarr_format=3)[...])


def _stored_as_is(var: xr.Variable) -> bool:
    """True if xarray reads ``var`` unchanged from its zarr array (numbers, no scaling or masking
    beyond NaN fill): then a task can read the zarr array directly."""
    encoding = var.encoding
    fill = encoding.get("_FillValue")
    return (
        var.dtype.kind in "biuf"
        and encoding.get("dtype") == var.dtype
        and not {"scale_factor", "add_offset", "calendar"} & set(encoding)
        and (fill is None or (isinstance(fill, float) and np.isnan(fill)))
    )


def _lazy_variable(var: xr.Variable, segment: Path, name: str, token: str) -> xr.Variable:
    """``var`` as a dask array of one chunk, one task reading its zarr array when computed; it
    holds the path and the name only (no open store, no zarr metadata)."""
    import dask.array

    key = f"read-{name}-{token}"
    task = (_read_array, str(segment), name)
    graph = {(key, *(0,) * var.ndim): task}
    data = dask.array.Array(
        graph, key, tuple((size,) for size in var.shape), meta=np.empty((0,) * var.ndim, var.dtype)
    )
    return xr.Variable(var.dims, data, var.attrs)


def read_zarr(path: Path, *, lazy: bool = False) -> xr.Dataset:
    """A segment, loaded into memory (eager), or with ``lazy=True`` opened with dask: every
    numeric data variable one dask chunk (nothing read until computed), coordinates, strings and
    attrs in memory."""
    with xr.open_dataset(path, engine="zarr", consolidated=False, zarr_format=3, chunks=None) as ds:
        if not lazy:
            return _strings_as_unicode(ds.load())
        from dask.base import tokenize

        token = tokenize(str(path.resolve()), path.stat().st_mtime_ns)
        out = ds.copy()
        for name, var in ds.variables.items():
            if name in ds.coords or not _stored_as_is(var):
                out[name].variable.load()
            else:
                out[name] = _lazy_variable(var, path, str(name), token)
    return _strings_as_unicode(out)


def _remove(path: Path) -> None:
    """Hide ``path`` with one rename, then delete it (a crash leaves only a hidden entry)."""
    hidden = path.parent / f".tmp-trash-{path.name}-{uuid.uuid4().hex[:8]}"
    os.rename(path, hidden)
    if hidden.is_dir():
        shutil.rmtree(hidden, ignore_errors=True)
    else:
        hidden.unlink(missing_ok=True)


def _select_before(ds: xr.Dataset, dim: str, stop: int) -> xr.Dataset:
    return ds.isel({dim: np.flatnonzero(np.asarray(ds[dim].values) < stop)})


def concat(parts: list[xr.Dataset], dim: str) -> xr.Dataset:
    """Concatenate segments along ``dim``; variables missing from a segment are NaN there."""
    parts = [p for p in parts if p.sizes.get(dim, 0)]
    if len(parts) == 1:
        return parts[0]
    return xr.concat(
        parts,
        dim=dim,
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
        combine_attrs="override",
    )


class _Descriptor:
    """An open file descriptor, closed (releasing its lock) by ``close`` or when collected."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    __del__ = close


class SegmentStore:
    """The ``record.zarr`` directory of one run."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.root = run_path(run_dir) / RECORD
        self._writer: _Descriptor | None = None  # WRITER_LOCK, held while this process records

    # ------------------------------------------------------------------ layout
    def exists(self) -> bool:
        return (self.root / STATIC).is_dir()

    def create(self) -> None:
        for path in (self.root, *(self.root / kind for kind in KINDS)):
            path.mkdir(parents=True, exist_ok=True)
            meta = path / "zarr.json"
            if not meta.exists():
                meta.write_text(json.dumps(_ROOT_META))

    def clean(self) -> None:
        """Delete the hidden leftovers of interrupted writes (call with no writer running)."""
        for folder in (self.root, *(self.root / kind for kind in KINDS)):
            if folder.is_dir():
                for path in folder.glob(".tmp-*"):
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writer state
    def hold_writer(self) -> None:
        """Hold ``WRITER_LOCK`` while recording (released by :meth:`release_writer` or when the
        process ends), so that readers can tell a record being written (see
        :func:`alignment.summary.run_state`). Does nothing where another holder has it."""
        if fcntl is None or self._writer is not None:
            return
        fd = os.open(self.root / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        self._writer = _Descriptor(fd)

    def release_writer(self) -> None:
        handle, self._writer = self._writer, None
        if handle is not None:
            handle.close()

    def mark_closed(self) -> None:
        """Write the ``CLOSED`` marker (atomically): the run finished."""
        tmp = self.root / f".tmp-{CLOSED}"
        tmp.write_text("closed by Recorder.close\n")
        os.rename(tmp, self.root / CLOSED)

    def reopen(self) -> None:
        """Remove the ``CLOSED`` marker (the record is being continued)."""
        (self.root / CLOSED).unlink(missing_ok=True)

    def closed(self) -> bool:
        """True if the recorder was closed normally (not by an exception, not killed)."""
        return (self.root / CLOSED).is_file()

    # ------------------------------------------------------------------ static
    def write_static(self, ds: xr.Dataset) -> None:
        write_zarr(ds, self.root / STATIC)

    def read_static(self, *, lazy: bool = False) -> xr.Dataset:
        """The static part; ``lazy``: data variables as dask arrays (see :func:`read_zarr`)."""
        if not self.exists():
            raise FileNotFoundError(f"no recorded run at {self.root.parent} (no {RECORD}/static)")
        return read_zarr(self.root / STATIC, lazy=lazy)

    # ------------------------------------------------------------------ the log
    def entries(self, kind: str) -> list[Entry]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            match = _ENTRY.match(path.name)
            if match is None:
                continue
            suffix = match.group(2)
            what = "compact" if suffix == ".compact" else "truncate" if suffix else "records"
            found.append(Entry(int(match.group(1)), what, path))
        return sorted(found, key=lambda e: e.seq)

    def live_entries(self, kind: str) -> list[Entry]:
        """The entries a reader replays: the last compact segment and everything after it."""
        entries = self.entries(kind)
        compacts = [i for i, e in enumerate(entries) if e.kind == "compact"]
        return entries[compacts[-1] :] if compacts else entries

    def _next_seq(self, kind: str) -> int:
        entries = self.entries(kind)
        return entries[-1].seq + 1 if entries else 0

    def append(self, kind: str, ds: xr.Dataset) -> Path:
        path = self.root / kind / f"{self._next_seq(kind):08d}"
        write_zarr(ds, path)
        return path

    def truncate(self, kind: str, stop: int) -> None:
        """Drop every record at step ≥ ``stop`` written so far (one atomic marker file)."""
        path = self.root / kind / f"{self._next_seq(kind):08d}.truncate.json"
        tmp = path.parent / f".tmp-{path.name}"
        tmp.write_text(json.dumps({"stop": int(stop)}))
        os.rename(tmp, path)

    def read(self, kind: str, *, lazy: bool = False) -> xr.Dataset | None:
        """Replay the log of ``kind``: the records, or None if there are none. ``lazy``: every
        segment opened with dask and concatenated without reading data (see :func:`read_zarr`)."""
        dim = KINDS[kind]
        parts: list[xr.Dataset] = []
        for entry in self.live_entries(kind):
            if entry.kind == "truncate":
                stop = json.loads(entry.path.read_text())["stop"]
                parts = [_select_before(p, dim, stop) for p in parts]
            elif entry.kind == "compact":
                parts = [read_zarr(entry.path, lazy=lazy)]
            else:
                parts.append(read_zarr(entry.path, lazy=lazy))
        parts = [p for p in parts if p.sizes.get(dim, 0)]
        return concat(parts, dim) if parts else None

    def last_step(self, kind: str = "main") -> int | None:
        ds = self.read(kind)
        if ds is None:
            return None
        return int(np.asarray(ds[KINDS[kind]].values).max())

    def compact(self, kind: str) -> None:
        """Rewrite the log of ``kind`` as one segment (crash-safe: see the module docstring)."""
        live = self.live_entries(kind)
        if not live or (len(live) == 1 and live[0].kind == "compact"):
            return
        ds = self.read(kind)
        stale = self.entries(kind)
        if ds is not None:
            write_zarr(ds, self.root / kind / f"{self._next_seq(kind):08d}.compact")
        elif not any(e.kind == "truncate" for e in stale):
            return
        for entry in stale:
            _remove(entry.path)
