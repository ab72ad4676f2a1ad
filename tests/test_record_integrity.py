"""Damaged records are errors naming the file, never wrong data: chunk checksums, segment
manifests, the log's numbering and head, ``alignment verify``/``repair``, refused resumes, and
damaged runs among many (named, or skipped on request)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import xarray as xr
import zarr

import alignment
from alignment.cli import main
from alignment.config import config_from_dict
from alignment.recording import integrity
from alignment.recording.integrity import DamagedRecordError, DamagedRunWarning
from alignment.recording.store import SegmentStore, _strings_as_objects
from alignment.training import train
from tests.synthetic import synthetic_run, write_run
from tests.test_recording_storage import recorder, stream, tiny, train_steps
from tests.test_training import data_of
from tests.test_training import tiny as tiny_config


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run recorded by the Recorder and interrupted (no close): steps 0–9 in 5 segments of
    the main log, raw tensors at 0, 4, 8; the checkpoint state after step 5 in ``state.json``."""
    run = tmp_path_factory.mktemp("recorded") / "run"
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = recorder(model, run, opt)
    data = stream(10)
    train_steps(model, opt, rec, data, range(6))
    (run / "state.json").write_text(json.dumps(rec.state_dict()))
    train_steps(model, opt, rec, data, range(6, 10))
    rec.flush()
    return run


@pytest.fixture
def run(recorded: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(recorded, tmp_path / "run"))


TRAIN = {"epochs": 2, "max_steps_per_epoch": 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of ``alignment train`` (tiny config): record, checkpoint.pt, DONE."""
    out = tmp_path_factory.mktemp("trained")
    (result,) = train(config_from_dict(tiny_config(**TRAIN)), out, quiet=True)
    return result.run_dir


@pytest.fixture
def finished(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "seed0"))


def segment(run: Path, seq: int, kind: str = "main") -> Path:
    (path,) = (run / "record.zarr" / kind).glob(f"{seq:08d}*")
    return path


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))


def last_compact(run: Path) -> Path:
    return sorted((run / "record.zarr" / "main").glob("*.compact"))[-1]


# ---------------------------------------------------------------------- checksums
def test_a_flipped_byte_in_a_chunk_is_an_error_naming_the_array_eager_and_lazy(run: Path) -> None:
    clean = alignment.open_run(run)
    chunk = segment(run, 1) / "loss" / "c" / "0"
    flip_byte(chunk)
    with pytest.raises(DamagedRecordError) as error:
        alignment.open_run(run)
    assert f"{segment(run, 1) / 'loss'}: cannot be read" in str(error.value)
    assert f"alignment repair {run}" in str(error.value)
    lazy = alignment.open_run(run, lazy=True)  # opening reads no data
    xr.testing.assert_identical(lazy["grad_alignment"].compute(), clean["grad_alignment"])
    with pytest.raises(DamagedRecordError, match="checksum"):
        lazy["loss"].compute()
    (problem,) = integrity.verify(run).problems
    assert problem == f"{chunk}: checksum mismatch (altered since it was written)"


def test_every_chunk_is_stored_with_a_crc32c(run: Path) -> None:
    for meta in (run / "record.zarr").rglob("*/zarr.json"):
        node = json.loads(meta.read_text())
        if node["node_type"] == "array":
            assert [c["name"] for c in node["codecs"]][-2:] == ["zstd", "crc32c"], meta


# ---------------------------------------------------------------------- manifests
def test_a_missing_chunk_is_an_error_not_nan(run: Path) -> None:
    chunk = segment(run, 2) / "loss" / "c" / "0"
    chunk.unlink()
    for lazy in (False, True):
        with pytest.raises(DamagedRecordError, match=f"{chunk}: missing"):
            alignment.open_run(run, lazy=lazy)


def test_a_truncated_chunk_is_an_error_naming_it(run: Path) -> None:
    chunk = segment(run, 2) / "grad_alignment" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    with pytest.raises(DamagedRecordError, match=f"{chunk}: .* bytes, written with"):
        alignment.open_run(run)


@pytest.mark.parametrize("seq", [0, 2, 4], ids=["first", "middle", "last"])
def test_a_deleted_segment_is_an_error_naming_it(run: Path, seq: int) -> None:
    shutil.rmtree(segment(run, seq))
    with pytest.raises(DamagedRecordError, match=f"main/{seq:08d}: missing"):
        alignment.open_run(run)
    (problem,) = integrity.verify(run).problems
    assert problem.startswith(f"{run / 'record.zarr' / 'main' / f'{seq:08d}'}: missing")


def test_a_deleted_compact_segment_is_an_error(finished: Path) -> None:
    shutil.rmtree(last_compact(finished))
    with pytest.raises(DamagedRecordError, match="missing"):
        alignment.open_run(finished)


@pytest.mark.parametrize("what", ["segment", "log", "root"])
def test_garbage_in_a_zarr_json_is_an_error_naming_it(run: Path, what: str) -> None:
    record = run / "record.zarr"
    meta = {
        "segment": segment(run, 1) / "zarr.json",
        "log": record / "main" / "zarr.json",
        "root": record / "zarr.json",
    }[what]
    meta.write_text("{not json")
    with pytest.raises(DamagedRecordError, match=f"{meta}: not valid JSON"):
        alignment.open_run(run)


def test_an_altered_array_metadata_is_an_error_naming_it(run: Path) -> None:
    meta = segment(run, 1) / "loss" / "zarr.json"
    meta.write_text(meta.read_text().replace('"shape": [\n    2', '"shape": [\n    3'))
    with pytest.raises(DamagedRecordError, match=f"{meta}: checksum mismatch"):
        alignment.open_run(run)


def test_garbage_in_a_truncation_marker_is_an_error_naming_it(run: Path) -> None:
    SegmentStore(run).truncate("main", 4)
    marker = segment(run, 5)
    for garbage in ("{stop: 4", '{"stop": "4"}', "[4]"):
        marker.write_text(garbage)
        with pytest.raises(DamagedRecordError, match=f"{marker}: not"):
            alignment.open_run(run)


GROUP = {"zarr_format": 3, "node_type": "group", "attributes": {}}


def test_records_written_before_checksums_stay_readable(run: Path, tmp_path: Path) -> None:
    """The layout of records written before manifests: plain zarr groups, no log heads."""
    ds, store = alignment.open_run(run, raw=True), SegmentStore(run)
    old = tmp_path / "old" / "record.zarr"
    for path in (old, old / "main", old / "raw"):
        path.mkdir(parents=True)
        (path / "zarr.json").write_text(json.dumps(GROUP))
    for part, target in [
        (store.read_static(), old / "static"),
        (store.read("main"), old / "main" / "00000000"),
        (store.read("raw"), old / "raw" / "00000000"),
    ]:
        _strings_as_objects(part).to_zarr(target, zarr_format=3, consolidated=False)
    xr.testing.assert_identical(alignment.open_run(old.parent, raw=True), ds)
    report = integrity.verify(old.parent)
    assert report.ok and report.format == 0
    flip_byte(old / "main" / "00000000" / "loss" / "c" / "0", where=0.1)  # zstd's frame header
    with pytest.raises(DamagedRecordError, match="main/00000000/loss: cannot be read"):
        alignment.open_run(old.parent)
    assert integrity.verify(old.parent).problems[0].startswith(f"{old / 'main' / '00000000'}")


# ---------------------------------------------------------------------- resume
def test_resume_refuses_a_record_with_a_gap_and_names_the_repair(run: Path) -> None:
    shutil.rmtree(segment(run, 3))
    with pytest.raises(DamagedRecordError, match=f"cannot resume {run}.*alignment repair {run}"):
        recorder(tiny(), run, None, resume=True)


def test_resume_refuses_records_whose_static_part_is_gone(run: Path) -> None:
    shutil.rmtree(run / "record.zarr" / "static")
    with pytest.raises(DamagedRecordError, match=r"cannot resume .*record.zarr/static: missing"):
        recorder(tiny(), run, None, resume=True)


def test_resume_refuses_a_damaged_chunk(run: Path) -> None:
    flip_byte(segment(run, 0) / "step" / "c" / "0")
    with pytest.raises(DamagedRecordError, match=r"cannot resume .*checksum mismatch"):
        recorder(tiny(), run, None, resume=True)


def test_a_checkpoint_ahead_of_the_record_is_refused(run: Path) -> None:
    """The last segment and the log's head gone alike (a record that lost its end): only the
    checkpoint knows."""
    state = json.loads((run / "state.json").read_text())
    for seq in (4, 3, 2):
        shutil.rmtree(segment(run, seq))
    store = SegmentStore(run)
    store._set_head("main", 1)
    rec = recorder(tiny(), run, None, resume=True)
    with pytest.raises(
        DamagedRecordError, match=r"after step 5 was recorded.* not hold it \(its last step is 8\)"
    ):
        rec.load_state_dict(state)


def test_resume_after_the_record_was_deleted_is_refused(finished: Path, capsys) -> None:
    (finished / "DONE").unlink()
    shutil.rmtree(finished / "record.zarr")
    assert main(["resume", str(finished), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"alignment: error: cannot resume {finished}: the checkpoint was saved")
    assert "it holds no records" in err and not (finished / "DONE").exists()
    assert main(["verify", str(finished)]) == 1  # the record recreated empty by the resume
    assert "checkpoint.pt: saved after step" in capsys.readouterr().out


# ---------------------------------------------------------------------- verify and repair
def test_verify_reports_each_run_and_each_problem(run: Path, finished: Path, capsys) -> None:
    assert main(["verify", str(run), str(finished)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"ok       {run} (main: up to step 9, raw: up to step 8)",
        f"ok       {finished} (main: up to step 6, raw: empty)",
    ]
    shutil.rmtree(segment(run, 2))
    (segment(run, 4) / "loss" / "c" / "0").unlink()
    flip_byte(last_compact(finished) / "epoch" / "c" / "0")
    assert main(["verify", str(run.parent)]) == 1  # both runs, found below their folder
    lines = capsys.readouterr().out.splitlines()
    main_log = run / "record.zarr" / "main"
    assert lines[0].startswith(f"damaged  {run}: {main_log / '00000002'}: missing")
    assert lines[1] == f"damaged  {run}: {main_log / '00000004' / 'loss' / 'c' / '0'}: missing"
    assert lines[2] == (
        f"damaged  {finished}: {last_compact(finished) / 'epoch' / 'c' / '0'}: checksum mismatch "
        "(altered since it was written)"
    )
    assert lines[3].startswith("2 damaged run(s): `alignment repair RUN`")
    assert len(lines) == 4


def test_repair_keeps_the_intact_steps_and_a_checkpoint_within_them(run: Path) -> None:
    before = alignment.open_run(run, raw=True)
    flip_byte(segment(run, 4) / "loss" / "c" / "0")  # steps 8–9
    result = integrity.repair(run)
    assert result.stop == 8 and result.last_step == 7
    assert result.removed == [run / "record.zarr" / "main" / "00000004"]
    after = alignment.open_run(run, raw=True)
    assert integrity.verify(run).ok
    assert after["step"].values.tolist() == list(range(8))
    assert after["raw_step"].values.tolist() == [0, 4]  # raw step 8 is past the intact part
    xr.testing.assert_identical(after, before.sel(step=slice(0, 7), raw_step=[0, 4]))
    rec = recorder(tiny(), run, None, resume=True)  # the checkpoint after step 5 still fits
    rec.load_state_dict(json.loads((run / "state.json").read_text()))


def test_repair_drops_everything_after_a_gap(run: Path) -> None:
    shutil.rmtree(segment(run, 1))  # steps 2–3
    result = integrity.repair(run)
    assert result.stop == 2
    assert alignment.open_run(run)["step"].values.tolist() == [0, 1]
    with pytest.raises(DamagedRecordError, match="after step 5 was recorded"):
        recorder(tiny(), run, None, resume=True).load_state_dict(
            json.loads((run / "state.json").read_text())
        )


def test_repair_then_resume_gives_the_uninterrupted_record(
    trained: Path, finished: Path, capsys
) -> None:
    flip_byte(last_compact(finished) / "loss" / "c" / "0")
    assert main(["repair", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "moved checkpoint.pt to checkpoint.pt.ahead-of-record" in out
    assert f"`alignment resume {finished}` trains the run again from step 0" in out
    assert not (finished / "DONE").exists() and not (finished / "checkpoint.pt").exists()
    assert main(["verify", str(finished)]) == 0
    assert main(["resume", str(finished), "--quiet"]) == 0
    assert (finished / "DONE").exists()
    xr.testing.assert_identical(
        data_of(alignment.open_run(finished)), data_of(alignment.open_run(trained))
    )
    assert main(["repair", str(finished)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{finished}: intact, nothing to repair"


def test_a_damaged_static_part_is_moved_aside(finished: Path, capsys) -> None:
    flip_byte(finished / "record.zarr" / "static" / "probe_label" / "c" / "0")
    assert main(["repair", str(finished)]) == 0
    (moved,) = finished.glob("record.zarr.damaged-*")
    assert f"moved the record to {moved}" in capsys.readouterr().out
    assert not (finished / "record.zarr").exists()
    assert main(["verify", str(finished)]) == 0  # no record, no checkpoint: a run to start


# ---------------------------------------------------------------------- many runs
@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("three_runs")
    for rule, seed in [("bp", 0), ("fa", 0), ("fa", 1)]:
        write_run(synthetic_run(rule, seed), root / f"{rule}{seed}", flushes=2, compact=False)
    return root


@pytest.fixture
def runs(three_runs: Path, tmp_path: Path) -> list[Path]:
    root = Path(shutil.copytree(three_runs, tmp_path / "runs"))
    return [root / name for name in ("bp0", "fa0", "fa1")]


def test_a_damaged_run_among_many_is_named(runs: Path) -> None:
    flip_byte(segment(runs[1], 1) / "test_accuracy" / "c" / "0")
    with pytest.raises(DamagedRecordError, match=f"{runs[1]}/record.zarr/main/00000001"):
        alignment.open_runs(runs, lazy=False)
    lazy = alignment.open_runs(runs)
    with pytest.raises(DamagedRecordError, match=f"{runs[1]}/.*test_accuracy"):
        lazy["test_accuracy"].compute()


@pytest.mark.parametrize("lazy", [True, False])
def test_damaged_runs_are_skipped_on_request(runs: Path, lazy: bool) -> None:
    flip_byte(segment(runs[1], 1) / "test_accuracy" / "c" / "0")
    shutil.rmtree(runs[2] / "record.zarr")
    with pytest.warns(DamagedRunWarning) as caught:
        ds = alignment.open_runs(runs, lazy=lazy, on_damaged="skip")
    assert [str(w.message).split(":")[0] for w in caught] == [
        f"skipping the damaged run {runs[1]}",
        f"skipping the damaged run {runs[2]}",
    ]
    assert json.loads(ds.attrs["runs"]) == [str(runs[0])]
    xr.testing.assert_identical(ds.compute(), alignment.open_runs(runs[:1], lazy=False))
    with pytest.raises(ValueError, match="on_damaged"):
        alignment.open_runs(runs, on_damaged="ignore")


def test_zarr_reads_the_record_as_one_hierarchy_without_warnings(run: Path) -> None:
    group = zarr.open_group(run / "record.zarr", mode="r")
    assert {name for name, _ in group.groups()} == {"static", "main", "raw"}


def test_a_log_compacted_while_it_is_read_is_read_again(run: Path, monkeypatch) -> None:
    """Not damage: another process (the run's recorder closing) compacted the log meanwhile."""
    from alignment.recording import store as store_module

    store = SegmentStore(run)
    expected = store.read("main")
    read_zarr, compacted = store_module.read_zarr, []

    def compacting_read(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not compacted:
            compacted.append(True)
            store.compact("main")  # the segment about to be read is gone now
        return read_zarr(*args, **kwargs)

    monkeypatch.setattr(store_module, "read_zarr", compacting_read)
    xr.testing.assert_identical(store.read("main"), expected)
    assert [e.kind for e in store.entries("main")] == ["compact"]


def test_repair_of_a_garbled_log_head_keeps_every_step(
    trained: Path, finished: Path, capsys
) -> None:
    (finished / "record.zarr" / "main" / "zarr.json").write_text("{garbage")
    assert main(["repair", str(finished)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"{finished}: rewrote the log's metadata, kept every step",
        f"{finished}: the run is complete",
    ]
    assert (finished / "DONE").exists() and (finished / "checkpoint.pt").exists()
    assert integrity.verify(finished).ok
    xr.testing.assert_identical(
        data_of(alignment.open_run(finished)), data_of(alignment.open_run(trained))
    )


def test_repair_refuses_a_run_another_writer_holds(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from alignment.runlock import run_lock

    flip_byte(segment(run, 4) / "loss" / "c" / "0")
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with run_lock(run):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(30)
        assert main(["repair", str(run)]) == 4
    finally:
        release.set()
        thread.join()
    assert "in use by another process" in capsys.readouterr().err
    assert len(list((run / "record.zarr" / "main").glob("00000004*"))) == 1  # nothing cut
    assert main(["repair", str(run)]) == 0  # free again: repaired
