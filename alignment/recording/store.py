"""Crash-safe, append-only storage of a run: a log of zarr segments under ``run_dir/record.zarr``.

Layout (every segment is a complete zarr v3 group, so the whole directory is one zarr hierarchy)::

    record.zarr/
        zarr.json                    root group; attribute ``_alignment_record``: the format
        static/                      run-level data: probe_input, probe_label, bbt_eigenvalues,
                                     the layer coordinate, and the run attrs (config, rule, seed, …)
        main/                        the log of per-step records (dim ``step``); its zarr.json
                                     holds the log's head (``_alignment_log``: the last entry)
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

Damage is an error naming the file, never wrong data (:mod:`.integrity`): every chunk is stored
with zarr's ``crc32c`` codec after the compressor, verified whenever zarr decodes it; every
segment's ``zarr.json`` holds a manifest (:mod:`.manifest`: its files with sizes and checksums,
its steps), so a missing, truncated or altered file is found before a read returns NaN; a log's
entries are numbered without gaps from 0 or from its last compact segment, and its head names
the last entry written (updated after each, with ``os.replace``), so a deleted segment, first,
middle or last, is found too. Records written before these have no manifests and no heads and
are read unchecked.

(Durability against power loss would additionally need fsync of every file and directory; a
process crash, which is what this protects against, leaves the kernel's page cache intact.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.storage import MemoryStore

from alignment.recording import manifest
from alignment.recording.manifest import DamagedRecordError

RECORD = "record.zarr"
STATIC = "static"
KINDS = {"main": "step", "raw": "raw_step"}
"""Log name → the dim its segments are concatenated along."""

CLOSED = "alignment_closed"
"""Attribute of the root ``record.zarr/zarr.json``: the recorder was closed normally (the run
finished)."""

_ENTRY = re.compile(r"^(\d{8})(\.compact|\.truncate\.json)?$")
_GROUP_META = {"zarr_format": 3, "node_type": "group", "attributes": {}}
RECORD_KEY = "_alignment_record"
"""Attribute of the root group: ``{"format": 1}`` in records written with manifests."""
HEAD_KEY = "_alignment_log"
"""Attribute of a log's group (``main``, ``raw``): ``{"last": seq, "manifests_from": seq}``, the
last entry written and the first written with a manifest."""
COMPRESSORS = (ZstdCodec(level=0, checksum=False), Crc32cCodec())
"""zarr's default compressor, then a CRC-32C of the compressed chunk, verified on every read."""
_PASS_THROUGH = (PermissionError, MemoryError, DamagedRecordError)
"""Errors a read passes on as they are; any other error reading a group means it is damaged."""


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


def write_zarr(ds: xr.Dataset, path: Path, dim: str | None = None) -> None:
    """Write ``ds`` as a zarr v3 group at ``path`` atomically (temporary directory + rename),
    every chunk with a CRC-32C and the group with its manifest (:mod:`.manifest`; ``dim``: the
    dim whose steps the manifest lists).

    The group is encoded into a :class:`zarr.storage.MemoryStore` and its keys written as the
    files a ``LocalStore`` would hold (key ``a/b`` → file ``a/b``): one round trip through zarr's
    event loop instead of one per array and file, about half the time of a direct write.
    """
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    contents: dict = {}
    ds = _strings_as_objects(ds)
    encoding = {name: {"compressors": COMPRESSORS} for name in ds.variables}
    ds.to_zarr(
        MemoryStore(contents), mode="w-", zarr_format=3, consolidated=False, encoding=encoding
    )
    files = {key: buffer.to_bytes() for key, buffer in contents.items()}
    steps = ds[dim].values if dim is not None and dim in ds.coords else None
    files["zarr.json"] = manifest.with_manifest(
        files["zarr.json"], {k: v for k, v in files.items() if k != "zarr.json"}, steps
    )
    try:
        for key, data in files.items():
            target = tmp.joinpath(*key.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_array(segment: str, name: str) -> np.ndarray:
    """The values of array ``name`` of a segment (a task of a lazy segment's dask graph)."""
    import zarr

    try:
        return np.asarray(zarr.open_array(store=segment, path=name, mode="r", zarr_format=3)[...])
    except _PASS_THROUGH:
        raise
    except Exception as error:
        if not Path(segment).is_dir():
            raise FileNotFoundError(
                f"{segment} is gone (compacted by the run's recorder since it was opened?); "
                "reopen the run"
            ) from error
        raise DamagedRecordError(f"{Path(segment) / name}: cannot be read ({error})") from error


def _load(ds: xr.Dataset, path: Path) -> xr.Dataset:
    """``ds`` read into memory; an error names the array that cannot be read."""
    try:
        return ds.load()
    except _PASS_THROUGH:
        raise
    except Exception as error:
        for name, var in ds.variables.items():
            try:
                var.load()
            except Exception as culprit:
                where = path / str(name)
                raise DamagedRecordError(f"{where}: cannot be read ({culprit})") from error
        raise DamagedRecordError(f"{path}: cannot be read ({error})") from error


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


def read_zarr(path: Path, *, lazy: bool = False, required: bool = False) -> xr.Dataset:
    """A segment, loaded into memory (eager), or with ``lazy=True`` opened with dask: every
    numeric data variable one dask chunk (nothing read until computed), coordinates, strings and
    attrs in memory. Checked against its manifest first (``required``: it must have one); a
    damaged segment raises :class:`DamagedRecordError` naming the file."""
    manifest.check(path, required=required)
    try:
        return _read_zarr(path, lazy)
    except _PASS_THROUGH:
        raise
    except Exception as error:
        raise DamagedRecordError(f"{path}: cannot be read ({error})") from error


def _read_zarr(path: Path, lazy: bool) -> xr.Dataset:
    with xr.open_dataset(path, engine="zarr", consolidated=False, zarr_format=3, chunks=None) as ds:
        ds.attrs.pop(manifest.KEY, None)
        if not lazy:
            return _strings_as_unicode(_load(ds, path))
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


class SegmentStore:
    """The ``record.zarr`` directory of one run."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.root = run_path(run_dir) / RECORD
        self._writer: contextlib.ExitStack | None = None  # the run lock, held while recording

    # ------------------------------------------------------------------ layout
    def exists(self) -> bool:
        return (self.root / STATIC).is_dir()

    def create(self) -> None:
        attributes = {
            self.root: {RECORD_KEY: {"format": manifest.FORMAT}},
            **{self.root / kind: {HEAD_KEY: {"last": -1, "manifests_from": 0}} for kind in KINDS},
        }
        for path, attrs in attributes.items():
            path.mkdir(parents=True, exist_ok=True)
            meta = path / "zarr.json"
            if not meta.exists():
                meta.write_text(json.dumps({**_GROUP_META, "attributes": attrs}))

    def format(self) -> int:
        """1 for a record written with manifests and log heads, 0 for an older one."""
        meta = manifest.read_json(self.root / "zarr.json")
        record = meta.get("attributes", {}).get(RECORD_KEY) if isinstance(meta, dict) else None
        return int(record["format"]) if isinstance(record, dict) else 0

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
        """Hold the run folder's lock (:func:`alignment.runlock.hold_run`, ``<run>/.lock``) while
        recording: released by :meth:`release_writer` or when the process ends. One writer per
        run: a folder another process (or thread) records into raises
        :class:`alignment.runlock.RunLockedError`; the trainer, which already holds the lock in
        this thread, re-enters it. Readers tell a record being written by the lock (see
        :func:`alignment.summary.run_state`)."""
        if self._writer is not None:
            return
        from alignment.runlock import hold_run

        stack = contextlib.ExitStack()
        stack.enter_context(hold_run(self.root.parent, wait_s=0))
        self._writer = stack

    def release_writer(self) -> None:
        stack, self._writer = self._writer, None
        if stack is not None:
            stack.close()

    def _root_attributes(self, update: dict) -> None:
        """Set (value) or remove (None) attributes of the root ``zarr.json``, atomically."""
        meta = self.root / "zarr.json"
        node = manifest.read_json(meta)
        attributes = dict(node.get("attributes", {}))
        for key, value in update.items():
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        tmp = self.root / ".tmp-zarr.json"
        tmp.write_text(json.dumps({**node, "attributes": attributes}))
        os.replace(tmp, meta)

    def mark_closed(self) -> None:
        """Mark the record closed (root attribute :data:`CLOSED`): the run finished."""
        self._root_attributes({CLOSED: True})

    def reopen(self) -> None:
        """Remove the closed mark (the record is being continued)."""
        self._root_attributes({CLOSED: None})

    def closed(self) -> bool:
        """True if the recorder was closed normally (not by an exception, not killed)."""
        try:
            node = manifest.read_json(self.root / "zarr.json")
        except (OSError, ValueError):
            return False
        return bool(node.get("attributes", {}).get(CLOSED))

    # ------------------------------------------------------------------ static
    def write_static(self, ds: xr.Dataset) -> None:
        write_zarr(ds, self.root / STATIC)

    def read_static(self, *, lazy: bool = False) -> xr.Dataset:
        """The static part; ``lazy``: data variables as dask arrays (see :func:`read_zarr`)."""
        if not self.exists():
            raise FileNotFoundError(f"no recorded run at {self.root.parent} (no {RECORD}/static)")
        return read_zarr(self.root / STATIC, lazy=lazy, required=self.format() >= 1)

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

    def head(self, kind: str) -> dict[str, int] | None:
        """The log's head (see ``HEAD_KEY``), None in a record written before heads."""
        meta_path = self.root / kind / "zarr.json"
        meta = manifest.read_json(meta_path)
        head = meta.get("attributes", {}).get(HEAD_KEY) if isinstance(meta, dict) else None
        if head is None:
            return None
        if not (
            isinstance(head, dict)
            and all(isinstance(head.get(k), int) for k in ("last", "manifests_from"))
        ):
            raise DamagedRecordError(f"{meta_path}: its log head ({HEAD_KEY}) is malformed")
        return head

    def _set_head(self, kind: str, last: int) -> None:
        """Record that entries up to ``last`` were written (atomically, with ``os.replace``)."""
        try:
            head = self.head(kind)
        except DamagedRecordError:  # garbled: rewritten whole (by a repair)
            head = {"manifests_from": 0}
        since = head["manifests_from"] if head is not None else last
        meta_path = self.root / kind / "zarr.json"
        tmp = meta_path.parent / f".tmp-zarr.json-{uuid.uuid4().hex[:8]}"
        attrs = {HEAD_KEY: {"last": int(last), "manifests_from": int(since)}}
        tmp.write_text(json.dumps({**_GROUP_META, "attributes": attrs}))
        os.replace(tmp, meta_path)

    def log_problems(self, kind: str) -> list[str]:
        """Entries missing from the log of ``kind``, one ``"FILE: what"`` per problem.

        The entries are numbered without gaps from 0 or from the last compact segment, and the
        log's head names the last one written: a gap, a missing start or a missing end (a
        deleted segment) is a problem; so is a missing log in a record written with heads.
        """
        folder = self.root / kind
        if not (folder / "zarr.json").exists():
            if self.format() >= 1:
                return [f"{folder / 'zarr.json'}: missing (the log of {kind} records)"]
            return []
        try:
            head = self.head(kind)
        except DamagedRecordError as error:
            return [error.problem]
        live = self.live_entries(kind)
        found = []
        expected = live[0].seq if live and live[0].kind == "compact" else 0
        for entry in live:
            if entry.seq != expected:
                missing = f"{expected:08d}" + (
                    f"–{entry.seq - 1:08d}" if entry.seq - 1 > expected else ""
                )
                found.append(f"{folder / missing}: missing (the log goes on at {entry.path.name})")
            expected = entry.seq + 1
        if head is not None and head["last"] >= expected:
            last = head["last"]
            found.append(
                f"{folder / f'{last:08d}'}: missing (the log ends at {expected - 1:08d}, its "
                f"head in {folder / 'zarr.json'} says it was written up to {last:08d})"
            )
        return found

    def check_log(self, kind: str) -> None:
        """Raise :class:`DamagedRecordError` naming the first problem of :meth:`log_problems`."""
        found = self.log_problems(kind)
        if found:
            raise DamagedRecordError(found[0])

    def manifest_required(self, kind: str, entry: Entry) -> bool:
        """Whether ``entry`` was written with a manifest (by a writer that writes them)."""
        head = self.head(kind)
        return entry.kind != "truncate" and head is not None and entry.seq >= head["manifests_from"]

    def _next_seq(self, kind: str) -> int:
        entries = self.entries(kind)
        last = entries[-1].seq if entries else -1
        head = self.head(kind) if (self.root / kind / "zarr.json").exists() else None
        return max(last, -1 if head is None else head["last"]) + 1

    def append(self, kind: str, ds: xr.Dataset) -> Path:
        seq = self._next_seq(kind)
        path = self.root / kind / f"{seq:08d}"
        write_zarr(ds, path, KINDS[kind])
        self._set_head(kind, seq)
        return path

    def truncate(self, kind: str, stop: int) -> None:
        """Drop every record at step ≥ ``stop`` written so far (one atomic marker file)."""
        seq = self._next_seq(kind)
        path = self.root / kind / f"{seq:08d}.truncate.json"
        tmp = path.parent / f".tmp-{path.name}"
        tmp.write_text(json.dumps({"stop": int(stop)}))
        os.rename(tmp, path)
        self._set_head(kind, seq)

    @staticmethod
    def truncate_stop(path: Path) -> int:
        """The step of a truncation marker; :class:`DamagedRecordError` naming it if garbled."""
        marker = manifest.read_json(path)
        stop = marker.get("stop") if isinstance(marker, dict) else None
        if isinstance(stop, bool) or not isinstance(stop, int):
            raise DamagedRecordError(f'{path}: not a truncation marker {{"stop": <step>}}')
        return stop

    def read(self, kind: str, *, lazy: bool = False) -> xr.Dataset | None:
        """Replay the log of ``kind``: the records, or None if there are none. ``lazy``: every
        segment opened with dask and concatenated without reading data (see :func:`read_zarr`).
        A damaged log raises :class:`DamagedRecordError` naming the file; a log that a writer
        compacted meanwhile (its entries changed during the read) is read again."""
        for _ in range(3):
            listed = self.entries(kind)
            try:
                return self._replay(kind, lazy)
            except DamagedRecordError:
                if self.entries(kind) == listed:
                    raise
        return self._replay(kind, lazy)

    def _replay(self, kind: str, lazy: bool) -> xr.Dataset | None:
        dim = KINDS[kind]
        self.check_log(kind)
        parts: list[xr.Dataset] = []
        for entry in self.live_entries(kind):
            if entry.kind == "truncate":
                stop = self.truncate_stop(entry.path)
                parts = [_select_before(p, dim, stop) for p in parts]
                continue
            segment = read_zarr(entry.path, lazy=lazy, required=self.manifest_required(kind, entry))
            parts = [segment] if entry.kind == "compact" else [*parts, segment]
        parts = [p for p in parts if p.sizes.get(dim, 0)]
        return concat(parts, dim) if parts else None

    def last_step(self, kind: str = "main") -> int | None:
        ds = self.read(kind)
        if ds is None:
            return None
        return int(np.asarray(ds[KINDS[kind]].values).max())

    def compact(self, kind: str) -> None:
        """Rewrite the log of ``kind`` as one segment (crash-safe: see the module docstring);
        an empty one when truncations dropped every record."""
        live = self.live_entries(kind)
        if not live or (len(live) == 1 and live[0].kind == "compact"):
            return
        ds = self.read(kind)
        stale = self.entries(kind)
        if ds is None:
            if not any(e.kind == "truncate" for e in stale):
                return
            dim = KINDS[kind]
            ds = xr.Dataset(coords={dim: np.array([], dtype=np.int64)})
        seq = self._next_seq(kind)
        write_zarr(ds, self.root / kind / f"{seq:08d}.compact", KINDS[kind])
        self._set_head(kind, seq)
        for entry in stale:
            _remove(entry.path)
