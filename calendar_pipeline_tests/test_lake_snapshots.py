"""Tests for calendar_pipeline.lake.atomic and calendar_pipeline.lake.snapshots."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest

from calendar_pipeline.lake import atomic
from calendar_pipeline.lake.atomic import (
    atomic_create_bytes,
    atomic_replace,
    atomic_write_bytes,
    atomic_write_text,
    fsync_dir,
)
from calendar_pipeline.lake.snapshots import (
    latest_snapshot,
    latest_snapshots,
    list_snapshots,
    sha256_file,
    validate_partition,
    write_snapshot,
)

NOW = dt.datetime(2024, 5, 1, 6, 30, 15, 123456, tzinfo=dt.UTC)
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes and fsync of dirs")


def stray_files(directory: Path) -> list[str]:
    """Temporary files an atomic write might have left behind."""
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


# ------------------------------------------------------------------------ atomic writes


def test_atomic_write_bytes_creates_parents_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.bin"

    atomic_write_bytes(target, b"\x00payload")

    assert target.read_bytes() == b"\x00payload"
    assert stray_files(target.parent) == []


def test_atomic_write_replaces_existing_content(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    atomic_write_text(target, "nouveau été")

    assert target.read_bytes() == "nouveau été".encode()


def test_failed_rename_keeps_old_content_and_removes_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.txt"
    atomic_write_text(target, "good")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(target, "bad")

    assert target.read_text() == "good"
    assert stray_files(tmp_path) == []


def test_exception_while_streaming_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    atomic_write_text(target, "good")

    with pytest.raises(RuntimeError), atomic_replace(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("writer crashed")

    assert target.read_text() == "good"
    assert stray_files(tmp_path) == []


@posix_only
def test_atomic_write_fsyncs_the_file_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_kinds: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced_kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_bytes(tmp_path / "f", b"x")

    assert synced_kinds == ["file", "dir"]


@posix_only
def test_fsync_dir_rejects_a_missing_directory(tmp_path: Path) -> None:
    fsync_dir(tmp_path)  # an existing directory is fine
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


@posix_only
def test_new_file_is_world_readable_and_replacement_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "file"
    atomic_write_bytes(target, b"1")
    assert stat.S_IMODE(target.stat().st_mode) == atomic.DEFAULT_FILE_MODE

    target.chmod(0o600)
    atomic_write_bytes(target, b"2")

    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"2"


def test_atomic_create_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "new.json"
    atomic_create_bytes(target, b"first")

    with pytest.raises(FileExistsError):
        atomic_create_bytes(target, b"second")

    assert target.read_bytes() == b"first"
    assert stray_files(tmp_path) == []


# ------------------------------------------------------------------------ partitions


@pytest.mark.parametrize(
    "bad", ["2024-1-05", "20240105", "2024-02-30", "2024-05-01T00:00", "../etc", "", " 2024-05-01"]
)
def test_bad_partition_is_rejected_naming_the_value(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        write_snapshot(tmp_path, bad, {})
    assert not (tmp_path / "snapshots").exists()


def test_non_string_partition_is_rejected() -> None:
    with pytest.raises(ValueError, match="ISO date"):
        validate_partition(dt.date(2024, 5, 1))
    assert validate_partition("2024-02-29") == "2024-02-29"


# ------------------------------------------------------------------------ write_snapshot


def test_write_snapshot_path_and_compact_utf8_json(tmp_path: Path) -> None:
    payload = {"zeta": 1, "alpha": ["Fête nationale", "中秋節"], "nested": {"b": 2, "a": 1}}

    path = write_snapshot(tmp_path, "2024-05-01", payload, now=NOW)

    assert path == tmp_path / "snapshots" / "2024-05-01" / "snapshot_20240501T063015123456Z.json"
    raw = path.read_bytes()
    assert "Fête nationale".encode() in raw  # ensure_ascii=False: stored as UTF-8
    assert b"\\u" not in raw
    assert b", " not in raw and b": " not in raw  # compact separators
    assert raw.startswith(b'{"zeta":1,"alpha"')  # key order kept (sort_keys=False)
    assert json.loads(raw) == payload
    assert stray_files(path.parent) == []


def test_timestamp_is_utc_with_microseconds(tmp_path: Path) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    local = dt.datetime(2024, 5, 1, 8, 30, 15, 7, tzinfo=paris)

    path = write_snapshot(tmp_path, "2024-05-01", {}, now=local)

    assert path.name == "snapshot_20240501T063015000007Z.json"


def test_two_runs_in_the_same_second_get_distinct_files(tmp_path: Path) -> None:
    first = write_snapshot(tmp_path, "2024-05-01", {"run": 1}, now=NOW)
    second = write_snapshot(
        tmp_path, "2024-05-01", {"run": 2}, now=NOW + dt.timedelta(microseconds=1)
    )

    assert first != second
    assert json.loads(first.read_text(encoding="utf-8")) == {"run": 1}
    assert json.loads(second.read_text(encoding="utf-8")) == {"run": 2}
    assert latest_snapshot(tmp_path, "2024-05-01") == second


def test_write_snapshot_never_overwrites(tmp_path: Path) -> None:
    first = write_snapshot(tmp_path, "2024-05-01", {"run": 1}, now=NOW)
    before = first.read_bytes()

    with pytest.raises(FileExistsError):
        write_snapshot(tmp_path, "2024-05-01", {"run": 2}, now=NOW)

    assert first.read_bytes() == before
    assert list_snapshots(tmp_path, "2024-05-01") == [first]


def test_naive_now_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        write_snapshot(tmp_path, "2024-05-01", {}, now=dt.datetime(2024, 5, 1, 6, 0))


def test_default_now_is_the_current_utc_time(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")

    path = write_snapshot(tmp_path, "2024-05-01", {})

    after = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    stamp = path.name.removeprefix("snapshot_")[:15]
    assert before <= stamp <= after


def test_unserialisable_payload_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_snapshot(tmp_path, "2024-05-01", {"x": float("nan")}, now=NOW)
    with pytest.raises(TypeError):
        write_snapshot(tmp_path, "2024-05-01", {"x": object()}, now=NOW)
    assert list_snapshots(tmp_path, "2024-05-01") == []


# ------------------------------------------------------------------------ listing


def test_latest_snapshot_picks_the_newest_and_ignores_strays(tmp_path: Path) -> None:
    times = [NOW + dt.timedelta(hours=h) for h in (2, 0, 1)]
    paths = [write_snapshot(tmp_path, "2024-05-01", {"h": t.hour}, now=t) for t in times]
    directory = paths[0].parent
    (directory / ".snapshot_29990101T000000000000Z.json.abc123.tmp").write_text("{")
    (directory / "snapshot_99999999.json").write_text("{}")
    (directory / "notes.txt").write_text("hi")

    assert latest_snapshot(tmp_path, "2024-05-01") == paths[0]
    assert list_snapshots(tmp_path, "2024-05-01") == [paths[1], paths[2], paths[0]]


def test_latest_snapshot_of_an_unknown_partition_is_none(tmp_path: Path) -> None:
    assert latest_snapshot(tmp_path, "2024-05-01") is None
    write_snapshot(tmp_path, "2024-05-02", {}, now=NOW)
    assert latest_snapshot(tmp_path, "2024-05-01") is None


def test_latest_snapshots_sorted_and_only_with_snapshots(tmp_path: Path) -> None:
    for partition in ("2024-05-03", "2024-04-30", "2024-05-01"):
        write_snapshot(tmp_path, partition, {}, now=NOW)
    (tmp_path / "snapshots" / "2024-05-09").mkdir()  # empty partition directory
    (tmp_path / "snapshots" / "not-a-date").mkdir()
    (tmp_path / "snapshots" / "not-a-date" / "snapshot_20240101T000000000000Z.json").write_text(
        "{}"
    )
    (tmp_path / "snapshots" / "2024-05-10").mkdir()
    (tmp_path / "snapshots" / "2024-05-10" / "x.tmp").write_text("")

    assert list(latest_snapshots(tmp_path)) == ["2024-04-30", "2024-05-01", "2024-05-03"]


def test_listing_an_empty_data_dir(tmp_path: Path) -> None:
    assert latest_snapshots(tmp_path / "missing") == {}
    assert latest_snapshots(tmp_path) == {}


# ------------------------------------------------------------------------ reading


def test_a_snapshot_reads_back_as_written(tmp_path: Path) -> None:
    payload = {"events": [{"name": "Noël", "date": "2024-12-25"}], "counts": {"rows": 1}}
    path = write_snapshot(tmp_path, "2024-05-01", payload, now=NOW)
    assert json.loads(path.read_text(encoding="utf-8")) == payload


# ------------------------------------------------------------------------ hashing


def test_sha256_file_hashes_files_larger_than_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(1024 * 1024) * 2 + b"tail"  # spans three 1 MiB chunks
    path.write_bytes(data)

    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_reads_in_one_mib_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (3 * 1024 * 1024))
    update_sizes: list[int] = []
    real_sha256 = hashlib.sha256

    class RecordingHash:
        def __init__(self) -> None:
            self._hash = real_sha256()

        def update(self, chunk: bytes) -> None:
            update_sizes.append(len(chunk))
            self._hash.update(chunk)

        def hexdigest(self) -> str:
            return self._hash.hexdigest()

    monkeypatch.setattr(hashlib, "sha256", RecordingHash)
    sha256_file(path)

    assert update_sizes == [1024 * 1024] * 3
