"""Tests for calendar_pipeline.lake.index: the JSONL snapshot index."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calendar_pipeline.lake import index as index_module
from calendar_pipeline.lake.index import (
    IndexCorruptError,
    SnapshotIndex,
    build_entry,
    encode_line,
    index_path,
)
from calendar_pipeline.lake.snapshots import latest_snapshots, write_snapshot

REPO_ROOT = Path(__file__).resolve().parents[1]
_clock = itertools.count()


def day(n: int) -> str:
    """The partition ``n`` days after 2024-01-01."""
    return (dt.date(2024, 1, 1) + dt.timedelta(days=n)).isoformat()


def snapshot_entry(data_dir: Path, partition: str, text: str = "", **extra: Any) -> dict:
    """Write a real snapshot of ``partition`` and return its index entry."""
    now = dt.datetime(2024, 6, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=next(_clock))
    payload = {"partition": partition, "text": text, "events": [{"id": 1}]}
    path = write_snapshot(data_dir, partition, payload, now=now)
    return build_entry(partition, path, row_count=1, error_count=0, **extra)


def fake_entry(partition: str, content: str = "x", **extra: Any) -> dict:
    """An entry with no file behind it, for tests about the file format only."""
    return {
        "partition": partition,
        "path": f"/nowhere/{partition}.json",
        "mtime": 0.0,
        "size": len(content.encode()),
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
        "row_count": 0,
        "error_count": 0,
        "content_text": content,
        **extra,
    }


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def newest(index: SnapshotIndex) -> dict | None:
    """The entry of the newest partition, read as the pipeline reads a day: ``get``."""
    partitions = index.partitions()
    return index.get(partitions[-1]) if partitions else None


def problem_texts(index: SnapshotIndex, files: dict[str, Path] | None = None) -> list[str]:
    return [text for _partition, text in index.problems(files)]


def stray_temp_files(index: SnapshotIndex) -> list[str]:
    return sorted(name for name in os.listdir(index.path.parent) if name.endswith(".tmp"))


@pytest.fixture
def index(tmp_path: Path) -> SnapshotIndex:
    return SnapshotIndex.for_data_dir(tmp_path)


@pytest.fixture
def filled(index: SnapshotIndex) -> SnapshotIndex:
    """An index of five partitions, days 0, 2, 4, 6, 8."""
    for n in (0, 2, 4, 6, 8):
        index.upsert(fake_entry(day(n), content=f"content of {day(n)}"))
    return index


@pytest.fixture
def real(tmp_path: Path) -> SnapshotIndex:
    """An index over real snapshot files of days 0, 1 and 2."""
    index = SnapshotIndex.for_data_dir(tmp_path)
    for n in range(3):
        index.upsert(snapshot_entry(tmp_path, day(n), text=f"day {n}"))
    return index


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


# ------------------------------------------------------------------------ entries and lines


def test_build_entry_fills_the_fingerprint_from_one_read(tmp_path: Path) -> None:
    entry = snapshot_entry(tmp_path, "2024-05-01", text="Fête", source="holidays")
    data = Path(entry["path"]).read_bytes()

    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["size"] == len(data)
    assert entry["mtime"] == Path(entry["path"]).stat().st_mtime
    assert entry["content_text"] == data.decode("utf-8")
    assert (entry["row_count"], entry["error_count"], entry["source"]) == (1, 0, "holidays")


def test_build_entry_rejects_extra_keys_that_clash(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        snapshot_entry(tmp_path, "2024-05-01", sha256="forged")


def test_build_entry_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(b'{"x":"\xff"}')
    with pytest.raises(ValueError, match=re.escape(str(path))):
        build_entry("2024-05-01", path, row_count=0, error_count=0)


def test_line_has_partition_first_and_content_text_last() -> None:
    line = encode_line({**fake_entry("2024-05-01", "body"), "zz_extra": 1, "a_extra": 2})

    assert line.startswith(b'{"partition":"2024-05-01",')
    assert line.endswith(b'"content_text":"body"}\n')
    assert line.count(b"\n") == 1
    assert list(json.loads(line)) == [
        "partition",
        "path",
        "mtime",
        "size",
        "sha256",
        "row_count",
        "error_count",
        "zz_extra",
        "a_extra",
        "content_text",
    ]


def test_encode_line_rejects_incomplete_or_invalid_entries() -> None:
    incomplete = fake_entry("2024-05-01")
    del incomplete["row_count"]
    with pytest.raises(ValueError, match="row_count"):
        encode_line(incomplete)
    with pytest.raises(ValueError, match="2024-5-1"):
        encode_line(fake_entry("2024-5-1"))


def test_content_with_newlines_and_unicode_separators_stays_on_one_line(
    index: SnapshotIndex,
) -> None:
    tricky = 'line1\nline2\r\nsep\u2028para\u2029nul\x00 "quoted" é'
    index.upsert(fake_entry(day(1), tricky))
    index.upsert(fake_entry(day(2), tricky))
    index.upsert(fake_entry(day(0), tricky))  # rewrite path too

    assert len(lines_of(index.path)) == 3
    assert index.partitions() == [day(0), day(1), day(2)]
    assert [e["content_text"] for e in index.entries(include_content=True)] == [tricky] * 3
    assert index.get(day(1))["content_text"] == tricky


# ------------------------------------------------------------------------ upsert


def test_first_upsert_creates_the_index_and_its_directory(tmp_path: Path) -> None:
    index = SnapshotIndex.for_data_dir(tmp_path / "data")
    entry = snapshot_entry(tmp_path / "data", "2024-05-01")

    index.upsert(entry)

    assert index.path == index_path(tmp_path / "data")
    assert index.path == tmp_path / "data" / "index" / "snapshots.jsonl"
    assert index.path.read_bytes() == encode_line(entry)
    assert index.get("2024-05-01") == entry


def test_append_keeps_earlier_bytes_identical(filled: SnapshotIndex) -> None:
    before = filled.path.read_bytes()
    inode = filled.path.stat().st_ino
    new = fake_entry(day(9), "newest")

    filled.upsert(new)

    after = filled.path.read_bytes()
    assert after[: len(before)] == before
    assert after[len(before) :] == encode_line(new)
    assert filled.path.stat().st_ino == inode  # appended in place, not rewritten
    assert newest(filled)["partition"] == day(9)
    assert filled.get(day(9)) == new


def test_append_never_renames(filled: SnapshotIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_replace(src: object, dst: object) -> None:
        raise AssertionError("the append fast path must not rewrite the file")

    monkeypatch.setattr(os, "replace", no_replace)
    filled.upsert(fake_entry(day(10)))

    assert filled.partitions()[-1] == day(10)


def test_replacing_a_middle_line(filled: SnapshotIndex) -> None:
    before = lines_of(filled.path)
    replacement = fake_entry(day(4), "new content", note="rerun")

    filled.upsert(replacement)

    after = lines_of(filled.path)
    assert after == [*before[:2], encode_line(replacement), *before[3:]]
    assert filled.get(day(4))["note"] == "rerun"
    assert stray_temp_files(filled) == []


def test_replacing_the_last_line(filled: SnapshotIndex) -> None:
    before = lines_of(filled.path)
    replacement = fake_entry(day(8), "rerun of the newest")

    filled.upsert(replacement)

    assert lines_of(filled.path) == [*before[:-1], encode_line(replacement)]
    assert filled.get(day(8)) == replacement


def test_inserting_in_the_middle_and_at_the_start(filled: SnapshotIndex) -> None:
    filled.upsert(fake_entry(day(5)))
    filled.upsert(fake_entry("2023-12-31"))

    assert filled.partitions() == ["2023-12-31", day(0), day(2), day(4), day(5), day(6), day(8)]


def test_out_of_order_upserts_end_up_sorted(index: SnapshotIndex) -> None:
    order = [7, 3, 9, 0, 5, 1, 8, 2, 6, 4]
    for n in order:
        index.upsert(fake_entry(day(n)))

    assert index.partitions() == [day(n) for n in range(10)]
    assert newest(index)["partition"] == day(9)


def test_reupserting_leaves_one_line_per_partition(filled: SnapshotIndex) -> None:
    for round_number in range(3):
        for n in (8, 0, 4):
            filled.upsert(fake_entry(day(n), f"round {round_number}"))

    partitions = filled.partitions()
    assert partitions == [day(0), day(2), day(4), day(6), day(8)]
    assert len(lines_of(filled.path)) == 5
    assert filled.get(day(4))["content_text"] == "round 2"


def test_upsert_sorted_matches_upserting_one_by_one(tmp_path: Path) -> None:
    batch = [fake_entry(day(n), f"batch {n}") for n in (0, 1, 3, 5, 7, 11)]
    one_by_one = SnapshotIndex(tmp_path / "a.jsonl")
    at_once = SnapshotIndex(tmp_path / "b.jsonl")
    for n in (1, 4, 7, 9):
        one_by_one.upsert(fake_entry(day(n), "seed"))
        at_once.upsert(fake_entry(day(n), "seed"))

    for entry in batch:
        one_by_one.upsert(entry)
    assert at_once.upsert_sorted(iter(batch)) == len(batch)

    assert at_once.path.read_bytes() == one_by_one.path.read_bytes()
    assert at_once.get(day(7))["content_text"] == "batch 7"  # replaced
    assert at_once.get(day(9))["content_text"] == "seed"  # kept


def test_upsert_sorted_is_all_or_nothing(filled: SnapshotIndex) -> None:
    before = filled.path.read_bytes()
    broken = fake_entry(day(3))
    del broken["sha256"]

    with pytest.raises(ValueError, match="sha256"):
        filled.upsert_sorted([fake_entry(day(1)), broken, fake_entry(day(20))])
    with pytest.raises(ValueError, match="comes after"):
        filled.upsert_sorted([fake_entry(day(1)), fake_entry(day(5)), fake_entry(day(3))])
    with pytest.raises(ValueError, match="comes after"):
        filled.upsert_sorted([fake_entry(day(1)), fake_entry(day(1))])

    assert filled.path.read_bytes() == before
    assert stray_temp_files(filled) == []


def test_upsert_sorted_of_nothing_does_nothing(index: SnapshotIndex) -> None:
    assert index.upsert_sorted([]) == 0
    assert not index.path.exists()


def test_concurrent_writers_lose_no_update(index: SnapshotIndex) -> None:
    partitions = [day(n) for n in range(60)]
    random.Random(7).shuffle(partitions)
    chunks = [partitions[i::6] for i in range(6)]
    errors: list[BaseException] = []

    def write(chunk: list[str]) -> None:
        try:
            for partition in chunk:
                index.upsert(fake_entry(partition))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert index.partitions() == sorted(partitions)


# ------------------------------------------------------------------------ reading


def test_reading_a_missing_or_empty_index(index: SnapshotIndex) -> None:
    assert index.get(day(0)) is None
    assert list(index.entries()) == []
    assert index.partitions() == []
    assert index.problems() == []

    index.path.parent.mkdir(parents=True)
    index.path.write_bytes(b"")
    assert index.get(day(0)) is None
    assert list(index.entries()) == []
    assert index.partitions() == []


def test_entries_drop_content_text_unless_asked(filled: SnapshotIndex) -> None:
    light = list(filled.entries())
    full = list(filled.entries(include_content=True))

    assert [e["partition"] for e in light] == [day(n) for n in (0, 2, 4, 6, 8)]
    assert all("content_text" not in e for e in light)
    assert [e["content_text"] for e in full] == [f"content of {day(n)}" for n in (0, 2, 4, 6, 8)]
    assert [{k: v for k, v in e.items() if k != "content_text"} for e in full] == light


@pytest.mark.parametrize("chunk_size", [5, 64, index_module._CHUNK_SIZE])
def test_get_finds_every_partition_and_nothing_else(
    index: SnapshotIndex, monkeypatch: pytest.MonkeyPatch, chunk_size: int
) -> None:
    monkeypatch.setattr(index_module, "_CHUNK_SIZE", chunk_size)
    rng = random.Random(chunk_size)
    present = sorted(rng.sample(range(120), 45))
    index.upsert_sorted(fake_entry(day(n), "y" * rng.randrange(0, 300)) for n in present)

    for n in range(-2, 123):
        found = index.get(day(n))
        if n in present:
            assert found is not None and found["partition"] == day(n)
        else:
            assert found is None
    assert newest(index)["partition"] == day(present[-1])


def test_get_rejects_a_bad_partition(filled: SnapshotIndex) -> None:
    with pytest.raises(ValueError, match="2024/01/01"):
        filled.get("2024/01/01")


def test_lines_whose_first_key_is_not_partition_are_still_readable(index: SnapshotIndex) -> None:
    index.upsert_sorted(fake_entry(day(n)) for n in (0, 2))
    entry = fake_entry(day(1))
    hand_edited = json.dumps({**{k: v for k, v in entry.items() if k != "partition"}, **entry})
    lines = lines_of(index.path)
    index.path.write_bytes(lines[0] + hand_edited.encode() + b"\n" + lines[1])

    assert index.partitions() == [day(0), day(1), day(2)]
    assert index.get(day(1)) == entry
    index.upsert(fake_entry(day(3)))
    assert index.partitions() == [day(0), day(1), day(2), day(3)]


class CountingFile:
    """Wraps a file object and counts the bytes read through it."""

    def __init__(self, inner: Any, counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    def read(self, *args: Any) -> bytes:
        data = self._inner.read(*args)
        self._counter[0] += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        for line in self._inner:
            self._counter[0] += len(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._inner.close()


def test_get_and_append_read_only_a_few_lines(
    index: SnapshotIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    line_size = 2_000
    index.upsert_sorted(fake_entry(day(n), "z" * line_size) for n in range(400))
    file_size = index.path.stat().st_size
    bytes_read = [0]
    monkeypatch.setattr(index_module, "_CHUNK_SIZE", 1024)
    monkeypatch.setattr(
        index_module,
        "open",
        lambda *a, **k: CountingFile(open(*a, **k), bytes_read),  # noqa: SIM115
        raising=False,
    )

    assert index.get(day(399))["partition"] == day(399)  # the newest: the last line only
    assert bytes_read[0] < 4 * line_size

    bytes_read[0] = 0
    index.upsert(fake_entry(day(400), "z" * line_size))
    assert bytes_read[0] < 4 * line_size

    bytes_read[0] = 0
    assert index.get(day(123))["partition"] == day(123)
    assert bytes_read[0] < 12 * 3 * line_size  # ~log2(400) probes, not the whole file
    assert 12 * 3 * line_size < file_size / 10


# ------------------------------------------------------------------------ crash safety


def test_trailing_partial_line_is_ignored_by_readers(filled: SnapshotIndex) -> None:
    complete = filled.path.read_bytes()
    partial = encode_line(fake_entry(day(9)))[:40]
    with open(filled.path, "ab") as handle:
        handle.write(partial)

    assert newest(filled)["partition"] == day(8)
    assert filled.partitions() == [day(n) for n in (0, 2, 4, 6, 8)]
    assert len(list(filled.entries())) == 5
    assert filled.get(day(9)) is None
    assert filled.get(day(8))["partition"] == day(8)
    assert filled.path.read_bytes() == complete + partial  # reading repairs nothing
    [problem] = [p for p in problem_texts(filled) if "does not exist" not in p]
    assert "trailing partial line" in problem


def test_next_append_truncates_a_trailing_partial_line(filled: SnapshotIndex) -> None:
    complete = filled.path.read_bytes()
    with open(filled.path, "ab") as handle:
        handle.write(encode_line(fake_entry(day(9)))[:-7])
    new = fake_entry(day(10))

    filled.upsert(new)

    assert filled.path.read_bytes() == complete + encode_line(new)
    assert not any("partial" in problem for problem in problem_texts(filled))


def test_next_rewrite_drops_a_trailing_partial_line(filled: SnapshotIndex) -> None:
    with open(filled.path, "ab") as handle:
        handle.write(b'{"partition":"2024-01-1')
    filled.upsert(fake_entry(day(3)))

    assert filled.path.read_bytes().endswith(b"}\n")
    assert filled.partitions() == [day(n) for n in (0, 2, 3, 4, 6, 8)]


def test_index_holding_only_a_partial_line(index: SnapshotIndex) -> None:
    index.path.parent.mkdir(parents=True)
    index.path.write_bytes(b'{"partition":"2024-01-01","pa')

    assert index.get("2024-01-01") is None
    assert index.partitions() == []

    index.upsert(fake_entry(day(3)))
    assert index.path.read_bytes() == encode_line(fake_entry(day(3)))


def test_writer_killed_before_the_rename_leaves_the_old_index(filled: SnapshotIndex) -> None:
    before = filled.path.read_bytes()

    result = run_python(
        """
        import os, sys
        from calendar_pipeline.lake.index import SnapshotIndex

        def die(src, dst):
            os._exit(1)  # killed after the temp file is complete, before the rename

        os.replace = die
        SnapshotIndex(sys.argv[1]).upsert({
            "partition": "2024-01-05", "path": "/x", "mtime": 0.0, "size": 1,
            "sha256": "0" * 64, "row_count": 0, "error_count": 0, "content_text": "new",
        })
        print("not reached")
        """,
        str(filled.path),
    )

    assert result.returncode == 1, result.stderr
    assert "not reached" not in result.stdout
    assert filled.path.read_bytes() == before
    assert filled.get(day(4))["content_text"] == "content of 2024-01-05"
    assert len(stray_temp_files(filled)) == 1  # os._exit skipped the cleanup

    filled.upsert(fake_entry(day(5)))  # the next writer sweeps the stale temp file
    assert stray_temp_files(filled) == []
    assert filled.partitions() == [day(n) for n in (0, 2, 4, 5, 6, 8)]


def test_writer_killed_mid_append_leaves_a_partial_line_that_is_repaired(
    filled: SnapshotIndex,
) -> None:
    before = filled.path.read_bytes()

    result = run_python(
        """
        import os, sys
        from calendar_pipeline.lake import index

        def write_half_then_die(handle, data):
            handle.write(data[: len(data) // 2])
            os._exit(1)

        index._write_all = write_half_then_die
        index.SnapshotIndex(sys.argv[1]).upsert({
            "partition": "2024-01-10", "path": "/x", "mtime": 0.0, "size": 1,
            "sha256": "0" * 64, "row_count": 0, "error_count": 0, "content_text": "n" * 500,
        })
        """,
        str(filled.path),
    )

    assert result.returncode == 1, result.stderr
    after = filled.path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    assert not after.endswith(b"\n")
    assert newest(filled)["partition"] == day(8)
    assert filled.get("2024-01-10") is None

    new = fake_entry(day(11))
    filled.upsert(new)
    assert filled.path.read_bytes() == before + encode_line(new)


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_sigkill_at_a_random_moment_leaves_a_readable_consistent_index(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import datetime as dt, sys
                from pathlib import Path
                from calendar_pipeline.lake.index import SnapshotIndex, build_entry
                from calendar_pipeline.lake.snapshots import write_snapshot

                data_dir = Path(sys.argv[1])
                index = SnapshotIndex.for_data_dir(data_dir)
                start = dt.date(2024, 1, 1)
                for i in range(100_000):
                    # mostly appends, every third write a rewrite of an older partition
                    n = i // 3 if i % 3 else max(0, i // 3 - 5)
                    partition = (start + dt.timedelta(days=n)).isoformat()
                    path = write_snapshot(data_dir, partition, {"i": i, "pad": "p" * 50_000})
                    index.upsert(build_entry(partition, path, row_count=i, error_count=0))
                    if i == 5:
                        print("ready", flush=True)
                """
            ),
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(random.uniform(0.05, 0.4))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL

    index = SnapshotIndex.for_data_dir(data_dir)
    partitions = index.partitions()
    assert len(partitions) >= 2
    assert partitions == sorted(set(partitions))
    assert newest(index)["partition"] == partitions[-1]
    problems = problem_texts(index)
    assert all("trailing partial line" in problem for problem in problems), problems

    index.upsert(snapshot_entry(data_dir, "2030-01-01"))
    assert problem_texts(index) == []
    assert stray_temp_files(index) == []


# ------------------------------------------------------------------------ corrupt input


def corrupt_line_3(index: SnapshotIndex) -> bytes:
    """Replace line 3 of the index with garbage; return the resulting bytes."""
    lines = lines_of(index.path)
    lines[2] = b"this is not json\n"
    index.path.write_bytes(b"".join(lines))
    return index.path.read_bytes()


@pytest.mark.parametrize(
    "write",
    [
        lambda idx: idx.upsert(fake_entry(day(3))),  # insert in the middle
        lambda idx: idx.upsert(fake_entry(day(6))),  # replace a line after the garbage
        lambda idx: idx.upsert(fake_entry(day(8))),  # replace the last line
        lambda idx: idx.upsert_sorted([fake_entry(day(1)), fake_entry(day(9))]),
    ],
    ids=["insert", "replace-middle", "replace-last", "upsert-sorted"],
)
def test_garbage_line_makes_writers_refuse_and_keeps_the_file(
    filled: SnapshotIndex, write: Any
) -> None:
    corrupted = corrupt_line_3(filled)

    with pytest.raises(ValueError, match=rf"{re.escape(str(filled.path))}: line 3\b"):
        write(filled)

    assert filled.path.read_bytes() == corrupted
    assert stray_temp_files(filled) == []


def test_line_cut_short_makes_rewrites_refuse(filled: SnapshotIndex) -> None:
    lines = lines_of(filled.path)
    lines[1] = lines[1][:60] + b"\n"  # valid partition prefix, body cut short
    filled.path.write_bytes(b"".join(lines))
    corrupted = filled.path.read_bytes()

    with pytest.raises(IndexCorruptError, match=r"line 2: line is cut short"):
        filled.upsert(fake_entry(day(3)))

    assert filled.path.read_bytes() == corrupted


def test_garbage_line_is_named_by_readers(filled: SnapshotIndex) -> None:
    corrupt_line_3(filled)

    with pytest.raises(IndexCorruptError, match="line 3") as caught:
        list(filled.entries())
    assert "calendar-pipeline verify --repair" in str(caught.value)  # the way out
    assert caught.value.line_number == 3
    assert caught.value.path == filled.path
    with pytest.raises(IndexCorruptError, match="line 3"):
        filled.partitions()


def test_garbage_last_line_blocks_the_append_and_get(filled: SnapshotIndex) -> None:
    with open(filled.path, "ab") as handle:
        handle.write(b'{"partition": broken}\n')
    corrupted = filled.path.read_bytes()

    with pytest.raises(IndexCorruptError, match=rf"{re.escape(str(filled.path))}: line 6\b"):
        filled.upsert(fake_entry(day(20)))
    assert filled.path.read_bytes() == corrupted
    with pytest.raises(IndexCorruptError, match="line 6"):
        filled.get(day(8))  # every get reads the last line first


@pytest.mark.parametrize(
    ("order", "reason"), [((0, 4, 2), "out of order"), ((0, 2, 2), "duplicate")]
)
def test_unsorted_or_duplicate_lines_make_rewrites_refuse(
    index: SnapshotIndex, order: tuple[int, ...], reason: str
) -> None:
    index.path.parent.mkdir(parents=True)
    index.path.write_bytes(b"".join(encode_line(fake_entry(day(n))) for n in order))
    before = index.path.read_bytes()

    with pytest.raises(IndexCorruptError, match=rf"line 3: {reason}"):
        index.upsert(fake_entry(day(1)))

    assert index.path.read_bytes() == before


# ------------------------------------------------------------------------ rebuild


def test_rebuild_keeps_the_intact_lines_sorted_and_drops_the_others(tmp_path: Path) -> None:
    index = SnapshotIndex.for_data_dir(tmp_path)
    good = {n: encode_line(snapshot_entry(tmp_path, day(n), text=f"day {n}")) for n in range(7)}
    missing = json.loads(good[4])
    Path(missing["path"]).unlink()  # its snapshot is gone
    tampered = json.loads(good[5])
    Path(tampered["path"]).write_text("changed after it was indexed")
    index.path.parent.mkdir(parents=True)
    index.path.write_bytes(
        good[0]
        + good[2]
        + good[1]  # out of order, intact: kept
        + b"this is not json\n"
        + good[3]
        + good[3]  # a day listed twice: both lines dropped
        + good[4]
        + good[5]
        + good[6]
        + good[6][:50]  # a trailing partial line
    )
    with pytest.raises(IndexCorruptError):
        index.upsert(fake_entry(day(1)))  # writers refuse it

    dropped = index.rebuild()

    assert dropped == [day(3), day(4), day(5)]
    assert index.path.read_bytes() == good[0] + good[1] + good[2] + good[6]
    assert index.problems() == []
    assert stray_temp_files(index) == []
    index.upsert(snapshot_entry(tmp_path, day(3), text="day 3 again"))  # writers accept it
    assert index.partitions() == [day(0), day(1), day(2), day(3), day(6)]


def test_rebuild_writes_a_hand_edited_line_in_the_standard_key_order(real: SnapshotIndex) -> None:
    expected = real.path.read_bytes()
    lines = lines_of(real.path)
    entry = json.loads(lines[1])
    lines[1] = json.dumps(dict(reversed(entry.items()))).encode() + b"\n"  # partition last
    real.path.write_bytes(b"".join(lines))

    assert real.rebuild() == []

    assert real.path.read_bytes() == expected


def test_rebuild_of_no_index_creates_none(index: SnapshotIndex) -> None:
    assert index.rebuild() == []
    assert not index.path.exists()


# ------------------------------------------------------------------------ verify


def test_verify_passes_on_a_consistent_index(real: SnapshotIndex, tmp_path: Path) -> None:
    assert problem_texts(real) == []
    assert problem_texts(real, latest_snapshots(tmp_path)) == []


def test_verify_catches_a_tampered_snapshot(real: SnapshotIndex) -> None:
    path = Path(real.get(day(1))["path"])
    path.write_text(path.read_text().replace("day 1", "day X"))

    [problem] = problem_texts(real)

    assert "line 2" in problem and str(path) in problem and "sha256" in problem


def test_verify_catches_a_missing_snapshot(real: SnapshotIndex) -> None:
    path = Path(real.get(day(2))["path"])
    path.unlink()

    [problem] = problem_texts(real)

    assert "line 3" in problem and str(path) in problem and "does not exist" in problem


def test_verify_catches_content_text_that_does_not_match_its_hash(real: SnapshotIndex) -> None:
    lines = lines_of(real.path)
    entry = json.loads(lines[0])
    entry["content_text"] = entry["content_text"].replace("day 0", "day 9")
    lines[0] = encode_line(entry)
    real.path.write_bytes(b"".join(lines))

    [problem] = problem_texts(real)

    assert "line 1" in problem and "content_text" in problem


def test_verify_reports_bad_lines_order_duplicates_and_keys(index: SnapshotIndex) -> None:
    incomplete = fake_entry(day(5))
    del incomplete["error_count"]
    index.path.parent.mkdir(parents=True)
    index.path.write_bytes(
        encode_line(fake_entry(day(2)))
        + b"{not json\n"
        + encode_line(fake_entry(day(1)))
        + encode_line(fake_entry(day(2)))
        + json.dumps({**incomplete, "size": "big"}).encode()
        + b"\n"
    )

    problems = [p for p in problem_texts(index) if "does not exist" not in p]

    assert len(problems) == 5, problems
    assert "line 2:" in problems[0] and "not valid JSON" in problems[0]
    assert "line 3 (2024-01-02): out of order" in problems[1]
    assert "line 4 (2024-01-03): duplicate partition, already on line 1" in problems[2]
    assert "line 5" in problems[3] and "error_count" in problems[3]
    assert "line 5" in problems[4] and "size" in problems[4]


def test_verify_against_the_data_dir(real: SnapshotIndex, tmp_path: Path) -> None:
    stale_path = real.get(day(1))["path"]
    newer = write_snapshot(tmp_path, day(1), {"rerun": True})  # not indexed yet
    unindexed = write_snapshot(tmp_path, day(7), {"new": True})
    real.path.write_bytes(b"".join(lines_of(real.path)[:2]))  # day 2's line gone, not its file

    problems = problem_texts(real, latest_snapshots(tmp_path))

    assert len(problems) == 3, problems
    assert f"points at {stale_path}, but the newest snapshot is {newer}" in problems[0]
    assert "partition 2024-01-03 has a snapshot" in problems[1]
    assert f"partition 2024-01-08 has a snapshot ({unindexed}) but no index line" in problems[2]


def test_verify_reports_a_line_without_any_snapshot(real: SnapshotIndex, tmp_path: Path) -> None:
    files = latest_snapshots(tmp_path)
    del files[day(0)]

    [problem] = problem_texts(real, files)

    assert "line 1 (2024-01-01)" in problem and "no snapshot for this partition" in problem
