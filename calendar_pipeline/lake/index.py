"""The snapshot index: one JSONL line per partition, sorted, the newest partition last.

File: ``{data_dir}/index/snapshots.jsonl``. Each line is a compact JSON object describing
the latest snapshot of one partition::

    {"partition":"2024-05-01","path":"...","mtime":...,"size":...,"sha256":"...",
     "row_count":...,"error_count":...,<caller's extra keys>,"content_text":"..."}

``partition`` is always the first key, so a line's partition is read from its first few
dozen bytes without parsing the rest; ``content_text`` (the snapshot file's full text,
often hundreds of KB) is always the last, so the small metadata reads first. JSON escapes
every newline inside strings, so ``b"\\n"`` only ever ends a line. The file is handled as
bytes and split on ``b"\\n"`` alone (text-mode reading would also split on ``\\r`` and
``\\u2028``).

Cost model (the index holds 1,000+ lines of several hundred KB each):

- ``upsert()`` of a partition newer than the last line *appends* one line: cost
  independent of the file size. Anything else (replacing any line, including the last,
  or inserting in the middle) streams the file line by line into a temporary file that
  atomically replaces the index; memory stays at one line.
- ``get()`` of the newest partition reads the last line backwards from the end of the
  file (its cost depends on the size of that line, not on the number of lines); of any
  other, it binary-searches over byte offsets: about log2(lines) probes of one line each.
- ``entries()``, ``entries_for()``, ``partitions()``, ``problems()`` and ``rebuild()``
  stream the whole file, one line at a time.

Why one module of 800 lines: the byte-level helpers (line heads, backwards and forwards
newline search, the peekable stream) exist only to keep the cost model above; apart from
``SnapshotIndex`` they would be a public API nobody else should call.

Crash safety (a process killed at any instant leaves the previous good state readable):

- A rewrite goes to ``.snapshots.jsonl.<random>.tmp`` in the same directory, is fsynced,
  then renamed over the index with ``os.replace`` and the directory fsynced. Killed before
  the rename, the old index is untouched (a stray temporary file may remain; the next
  writer removes it); killed after, the new index is complete.
- An append writes the whole line, ``"\\n"`` included, in one write call, then fsyncs. Killed
  midway, it can leave a *trailing partial line* with no final ``"\\n"``. Readers ignore a
  trailing line that does not end in ``"\\n"`` (it is an unfinished append, not data), and
  the next ``upsert`` truncates it away before writing. ``problems()`` reports it meanwhile.

Concurrency: writers in any process serialise on an advisory lock (``fcntl.flock``) on
``snapshots.jsonl.lock``; readers take no lock, since every state they can observe is one
of the states above.

Corruption: writers refuse with ``IndexCorruptError`` (a ``ValueError``) naming the index
path and the line number, and leave the file exactly as it was (nothing already stored is
lost), when a complete line has no readable partition, looks cut short (does not end
with ``}``), or breaks the sort order or the one-line-per-partition rule. The checks are
sized to each operation's cost: an append checks only the last line (checking every line
would make its cost grow with the file); a rewrite, which streams every line anyway,
checks each line's partition prefix, ending and order, but does not parse each line's
JSON (that would double its cost); ``problems()`` parses and checks everything. To
repair, run ``calendar-pipeline verify --repair``: it rebuilds the index from its intact
lines (``SnapshotIndex.rebuild``) and indexes again, from the snapshot files, each day
whose line it dropped and whose newest snapshot passes the checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from calendar_pipeline.lake.atomic import (
    atomic_replace,
    fsync_dir,
    storage_errors,
    temp_files,
    temp_prefix,
    writer_lock,
)
from calendar_pipeline.lake.snapshots import is_valid_partition, sha256_file, validate_partition

INDEX_DIR = "index"
INDEX_FILE = "snapshots.jsonl"

#: Keys every line has, in this order; caller extras follow, then ``content_text``.
REQUIRED_KEYS = (
    "partition",
    "path",
    "mtime",
    "size",
    "sha256",
    "row_count",
    "error_count",
    "content_text",
)
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "partition": str,
    "path": str,
    "mtime": (int, float),
    "size": int,
    "sha256": str,
    "row_count": int,
    "error_count": int,
    "content_text": str,
}

#: Bytes read per step when scanning for newlines.
_CHUNK_SIZE = 256 * 1024
#: Enough bytes to hold ``{"partition":"YYYY-MM-DD",``.
_PREFIX_SIZE = 64
_PREFIX_RE = re.compile(rb'\{"partition":"(\d{4}-\d{2}-\d{2})"[,}]')


class IndexCorruptError(ValueError):
    """A complete line of the index is unreadable, out of order or duplicated."""

    def __init__(self, path: Path, line_number: int, reason: str) -> None:
        super().__init__(
            f"{path}: line {line_number}: {reason} (`calendar-pipeline verify --repair` "
            "rebuilds the index from its intact lines)"
        )
        self.path = path
        self.line_number = line_number
        self.reason = reason


class _BadLine(ValueError):
    """A line failed to parse; the caller adds the path and line number."""


class _Unchanged(Exception):
    """Raised inside a rewrite to abandon it when it would change nothing."""


def index_path(data_dir: Path) -> Path:
    """Where the index of ``data_dir`` lives."""
    return Path(data_dir) / INDEX_DIR / INDEX_FILE


def build_entry(
    partition: str,
    snapshot_path: Path,
    row_count: int,
    error_count: int,
    **extra: Any,
) -> dict[str, Any]:
    """An index entry for one snapshot file, reading the file once.

    Fills ``path`` (as given), ``mtime``, ``size``, ``sha256`` and ``content_text`` (the
    file decoded as UTF-8) from the same read, so the hash always matches the text.
    ``extra`` keys are kept and must not collide with the standard ones.
    """
    validate_partition(partition)
    clashes = sorted(set(extra) & set(REQUIRED_KEYS))
    if clashes:
        raise ValueError(f"extra keys clash with standard index keys: {', '.join(clashes)}")
    snapshot_path = Path(snapshot_path)
    with open(snapshot_path, "rb") as handle:
        mtime = os.fstat(handle.fileno()).st_mtime
        data = handle.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{snapshot_path}: snapshot is not valid UTF-8 ({exc})") from exc
    return {
        "partition": partition,
        "path": str(snapshot_path),
        "mtime": mtime,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "row_count": row_count,
        "error_count": error_count,
        **extra,
        "content_text": text,
    }


def encode_line(entry: Mapping[str, Any]) -> bytes:
    """One index line (``\\n`` included) for ``entry``, keys in the canonical order."""
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise ValueError(
            f"index entry for {entry.get('partition')!r} is missing: {', '.join(missing)}"
        )
    validate_partition(entry["partition"])
    if not isinstance(entry["content_text"], str):
        raise ValueError(f"content_text of {entry['partition']} must be a str")
    ordered = {key: entry[key] for key in REQUIRED_KEYS if key != "content_text"}
    ordered["path"] = os.fspath(ordered["path"])
    ordered.update((key, value) for key, value in entry.items() if key not in REQUIRED_KEYS)
    ordered["content_text"] = entry["content_text"]
    text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def _parse_line(line: bytes) -> dict[str, Any]:
    """Decode one line (with or without its ``\\n``) into an entry; ``_BadLine`` if invalid."""
    try:
        entry = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadLine(f"not valid JSON ({exc})") from exc
    if not isinstance(entry, dict):
        raise _BadLine(f"expected a JSON object, got {type(entry).__name__}")
    if not is_valid_partition(entry.get("partition")):
        raise _BadLine(f"no valid 'partition' key (got {entry.get('partition')!r})")
    return entry


def _prefix_partition(data: bytes) -> str | None:
    """The partition named by the first bytes of a line, or ``None`` if they do not start
    with ``{"partition":"YYYY-MM-DD"`` (say, a hand-edited line with other key order)."""
    match = _PREFIX_RE.match(data, 0, _PREFIX_SIZE)
    if match and is_valid_partition(partition := match.group(1).decode("ascii")):
        return partition
    return None


_PATH_RE = re.compile(rb'"path":"((?:[^"\\]|\\.)*)"')


def _line_head(line: bytes) -> tuple[str, str] | None:
    """``(partition, path)`` from a line's first bytes (the standard key order puts both
    first), or ``None`` when they are not there."""
    partition = _prefix_partition(line)
    match = _PATH_RE.search(line, 0, 8192)
    if partition is None or match is None:
        return None
    try:
        return partition, json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return None


def _line_partition(line: bytes) -> str:
    """A whole line's partition: from its prefix, else by parsing the line."""
    return _prefix_partition(line) or _parse_line(line)["partition"]


def _iter_complete_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """``(line number, line incl. "\\n")`` for every complete line, from the current position.

    Stops before a trailing line without ``"\\n"``: that is an unfinished append.
    """
    for line_number, line in enumerate(handle, start=1):
        if not line.endswith(b"\n"):
            return
        yield line_number, line


def _rfind_newline(handle: BinaryIO, before: int) -> int:
    """Offset of the last ``\\n`` strictly before offset ``before``, or -1 if none."""
    end = before
    while end > 0:
        start = max(0, end - _CHUNK_SIZE)
        handle.seek(start)
        position = handle.read(end - start).rfind(b"\n")
        if position >= 0:
            return start + position
        end = start
    return -1


def _find_newline(handle: BinaryIO, start: int, limit: int) -> int:
    """Offset of the first ``\\n`` in ``[start, limit)``, or -1 if none."""
    position = start
    while position < limit:
        handle.seek(position)
        chunk = handle.read(min(_CHUNK_SIZE, limit - position))
        if not chunk:
            break
        found = chunk.find(b"\n")
        if found >= 0:
            return position + found
        position += len(chunk)
    return -1


def _complete_end(handle: BinaryIO) -> int:
    """Offset just past the last complete line: the file size minus any partial tail."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return size
    return _rfind_newline(handle, size) + 1


def _read_span(handle: BinaryIO, start: int, end: int) -> bytes:
    handle.seek(start)
    return handle.read(end - start)


def _line_number_at(handle: BinaryIO, offset: int) -> int:
    """The 1-based number of the line starting at ``offset`` (scans; for error messages)."""
    handle.seek(0)
    newlines = 0
    remaining = offset
    while remaining > 0 and (chunk := handle.read(min(_CHUNK_SIZE, remaining))):
        newlines += chunk.count(b"\n")
        remaining -= len(chunk)
    return newlines + 1


def _write_all(handle: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file (a raw write may be partial)."""
    view = memoryview(data)
    while view:
        written = handle.write(view)
        view = view[written:]


class _Peekable:
    """An iterator whose next item can be looked at without taking it."""

    _EMPTY = object()

    def __init__(self, items: Iterator[tuple[str, bytes]]) -> None:
        self._items = iter(items)
        self._head: Any = self._EMPTY

    def peek(self) -> tuple[str, bytes] | None:
        if self._head is self._EMPTY:
            self._head = next(self._items, None)
        return self._head

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> tuple[str, bytes]:
        head = self.peek()
        if head is None:
            raise StopIteration
        self._head = self._EMPTY
        return head


class SnapshotIndex:
    """The JSONL snapshot index at ``path``; see the module docstring for the guarantees."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SnapshotIndex:
        """The index of a data directory (``{data_dir}/index/snapshots.jsonl``)."""
        return cls(index_path(data_dir))

    def __repr__(self) -> str:
        return f"SnapshotIndex({str(self.path)!r})"

    # ----------------------------------------------------------------- reading

    def get(self, partition: str) -> dict[str, Any] | None:
        """The entry of ``partition``, or ``None`` if the index has no line for it.

        Checks the last line first (the common question is about the newest partition),
        then binary-searches over byte offsets.
        """
        validate_partition(partition)
        with self._open_for_reading() as handle:
            if handle is None:
                return None
            last = self._last_line_span(handle)
            if last is None:
                return None
            last_partition = self._partition_at(handle, *last)
            if partition == last_partition:
                return self._parse_at(handle, *last)
            if partition > last_partition:
                return None
            return self._binary_search(handle, partition, end=last[0])

    def entries(self, include_content: bool = False) -> Iterator[dict[str, Any]]:
        """Every entry, oldest partition first; without ``content_text`` unless asked."""
        with self._open_for_reading() as handle:
            if handle is None:
                return
            for line_number, line in _iter_complete_lines(handle):
                try:
                    entry = _parse_line(line)
                except _BadLine as exc:
                    raise IndexCorruptError(self.path, line_number, str(exc)) from exc
                if not include_content:
                    entry.pop("content_text", None)
                yield entry

    def entries_for(self, partitions: Iterable[str]) -> Iterator[dict[str, Any]]:
        """The entries (with ``content_text``) of ``partitions`` that the index has, oldest
        first, in one pass over the file: a line is parsed only when its partition prefix
        is wanted. For many partitions, far cheaper than one ``get`` each (a binary search
        reads whole lines of several MB at every probe)."""
        wanted = set(partitions)
        with self._open_for_reading() as handle:
            if handle is None:
                return
            for line_number, line in _iter_complete_lines(handle):
                if self._partition_of(line, line_number) not in wanted:
                    continue
                try:
                    yield _parse_line(line)
                except _BadLine as exc:
                    raise IndexCorruptError(self.path, line_number, str(exc)) from exc

    def partitions(self) -> list[str]:
        """The partitions in the index, in file order, read from the line prefixes."""
        with self._open_for_reading() as handle:
            if handle is None:
                return []
            return [
                self._partition_of(line, line_number)
                for line_number, line in _iter_complete_lines(handle)
            ]

    # ----------------------------------------------------------------- writing

    def upsert(self, entry: Mapping[str, Any]) -> None:
        """Insert or replace the line of ``entry["partition"]``, keeping the file sorted.

        Appends when the partition is newer than the last line (cost independent of the
        file size); otherwise rewrites the file atomically.
        """
        line = encode_line(entry)
        partition = entry["partition"]
        with self._writer_lock():
            if not self._try_append(partition, line):
                self._rewrite({partition: line})

    def upsert_sorted(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace the lines of ``entries``, given in ascending partition order,
        in one atomic rewrite (all or nothing; the same result as ``upsert`` of each in
        turn), streamed: each entry is encoded and written as it comes, so memory holds
        one line whatever the batch's size (a three-year backfill of thousands of
        entities). Raises ``ValueError`` (the index untouched) when the order is broken.
        Returns the count."""
        count = 0

        def lines() -> Iterator[tuple[str, bytes]]:
            nonlocal count
            previous = None
            for entry in entries:
                partition = entry["partition"]
                if previous is not None and partition <= previous:
                    raise ValueError(f"upsert_sorted: {partition} comes after {previous}")
                previous = partition
                count += 1
                yield partition, encode_line(entry)

        with self._writer_lock():
            self._rewrite(lines())
        return count

    def rebuild(self) -> list[str]:
        """Rewrite the index from its intact lines: ``verify --repair``'s answer to an
        index that writers refuse (``IndexCorruptError``) or whose lines disagree with
        their files.

        A line is kept when ``problems`` finds nothing wrong with it: it parses, has the
        standard keys and types, its snapshot file exists with the recorded ``sha256``
        and its ``content_text`` hashes to it. Kept lines are written sorted by
        partition (so lines out of order are repaired); every other line is dropped:
        unreadable ones, ones cut short, every line of a partition listed twice, a
        trailing partial line. A day whose line was dropped is left for its newest
        snapshot to be judged and indexed again (``verify --repair`` does it).

        Returns the partitions that had a readable line and now have none. Streams:
        memory holds the offsets of the kept lines and one line at a time.
        """
        with self._writer_lock(), self._open_for_reading() as old:
            if old is None:
                return []
            kept: dict[str, tuple[int, int]] = {}  # partition -> (offset, length)
            seen: set[str] = set()
            twice: set[str] = set()
            offset = 0
            for _line_number, line in _iter_complete_lines(old):
                start, offset = offset, offset + len(line)
                try:
                    entry = _parse_line(line)
                except _BadLine:
                    continue
                partition = entry["partition"]
                (twice if partition in seen else seen).add(partition)
                if next(self._verify_entry("", entry), None) is None:
                    kept[partition] = (start, offset)
            for partition in twice:
                kept.pop(partition, None)
            with atomic_replace(self.path) as out:
                for partition in sorted(kept):
                    line = _read_span(old, *kept[partition])
                    if _prefix_partition(line) != partition:  # a hand-edited key order
                        line = encode_line(_parse_line(line))
                    out.write(line)
        return sorted(seen - kept.keys())

    # ----------------------------------------------------------------- checking

    def problems(
        self,
        data_dir_files: Mapping[str, Path] | None = None,
        full_for: Iterable[str] | None = None,
    ) -> list[tuple[str | None, str]]:
        """Human-readable problems with the index (an empty list when it is consistent),
        each with the partition it concerns (``None`` for a problem of the file itself,
        such as an unreadable line), so that a caller can judge some partitions and only
        report the others.

        Checks that every line is a JSON object with the standard keys, that lines are
        sorted with one per partition, that each ``path`` exists with the recorded
        ``sha256``, and that each ``content_text`` hashes to that ``sha256``. Given
        ``data_dir_files`` (partition -> newest snapshot path, see
        ``snapshots.latest_snapshots``) it also reports snapshots with no line and lines
        that do not point at their partition's newest snapshot.

        ``full_for``: only these partitions' lines are parsed and hashed against their
        files; the others get the cheap checks (order, duplicates, which file the line
        points at, read from the line's first bytes). A daily run judges its own day in
        full and the history in a time that does not grow with the snapshots' size."""
        problems: list[tuple[str | None, str]] = []
        indexed: dict[str, tuple[int, str]] = {}
        full = None if full_for is None else set(full_for)
        with self._open_for_reading() as handle:
            if handle is not None:
                problems.extend(self._verify_lines(handle, indexed, full))
        if data_dir_files is not None:
            problems.extend(self._verify_against_files(indexed, data_dir_files))
        return problems

    def _verify_lines(
        self,
        handle: BinaryIO,
        indexed: dict[str, tuple[int, str]],
        full: set[str] | None = None,
    ) -> Iterator[tuple[str | None, str]]:
        """Problems line by line; fills ``indexed`` with partition -> (line number, path).
        Lines of partitions outside ``full`` (when given) are checked from their head."""
        first_line_of: dict[str, int] = {}
        previous: str | None = None
        for line_number, line in enumerate(handle, start=1):
            where = f"{self.path}: line {line_number}"
            if not line.endswith(b"\n"):
                yield (
                    None,
                    (
                        f"{where}: trailing partial line of {len(line)} bytes (an interrupted "
                        "append; readers ignore it and the next upsert removes it)"
                    ),
                )
                break
            head = _line_head(line) if full is not None else None
            if head is not None and head[0] not in full and line.rstrip().endswith(b"}"):
                entry = {"partition": head[0], "path": head[1]}
            else:
                try:
                    entry = _parse_line(line)
                except _BadLine as exc:
                    yield None, f"{where}: {exc}"
                    continue
            partition = entry["partition"]
            where = f"{where} ({partition})"
            if partition in first_line_of:
                yield (
                    partition,
                    (f"{where}: duplicate partition, already on line {first_line_of[partition]}"),
                )
            elif previous is not None and partition < previous:
                yield partition, f"{where}: out of order, comes after {previous}"
            first_line_of.setdefault(partition, line_number)
            previous = partition
            if "content_text" in entry:  # parsed in full
                for problem in self._verify_entry(where, entry):
                    yield partition, problem
            if isinstance(entry.get("path"), str):
                indexed[partition] = (line_number, entry["path"])

    @staticmethod
    def _verify_entry(where: str, entry: Mapping[str, Any]) -> Iterator[str]:
        """Problems with one parsed entry: its fields, its file, its embedded content."""
        missing = [key for key in REQUIRED_KEYS if key not in entry]
        if missing:
            yield f"{where}: missing keys: {', '.join(missing)}"
        wrong_type = [
            key
            for key, expected in _FIELD_TYPES.items()
            if key in entry and not isinstance(entry[key], expected)
        ]
        if wrong_type:
            yield f"{where}: wrong value type for: {', '.join(wrong_type)}"
        recorded = entry.get("sha256")
        path = entry.get("path")
        if isinstance(path, str):
            if not Path(path).is_file():
                yield f"{where}: snapshot file {path} does not exist"
            elif (actual := sha256_file(Path(path))) != recorded:
                yield (
                    f"{where}: sha256 of {path} is {actual} but the index records "
                    f"{recorded} (the file changed after it was indexed)"
                )
        content = entry.get("content_text")
        if isinstance(content, str):
            content_sha = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()
            if content_sha != recorded:
                yield (
                    f"{where}: content_text hashes to {content_sha} but the index "
                    f"records {recorded}"
                )

    @staticmethod
    def _verify_against_files(
        indexed: Mapping[str, tuple[int, str]], data_dir_files: Mapping[str, Path]
    ) -> Iterator[tuple[str, str]]:
        for partition, newest in sorted(data_dir_files.items()):
            if partition not in indexed:
                yield (
                    partition,
                    f"partition {partition} has a snapshot ({newest}) but no index line",
                )
                continue
            line_number, path = indexed[partition]
            if Path(path).resolve() != Path(newest).resolve():
                yield (
                    partition,
                    (
                        f"line {line_number} ({partition}): points at {path}, but the newest "
                        f"snapshot is {newest}"
                    ),
                )
        for partition in sorted(indexed.keys() - data_dir_files.keys()):
            line_number, path = indexed[partition]
            yield (
                partition,
                (
                    f"line {line_number} ({partition}): points at {path}, but the data "
                    "directory has no snapshot for this partition"
                ),
            )

    # ----------------------------------------------------------------- internals

    @contextlib.contextmanager
    def _open_for_reading(self) -> Iterator[BinaryIO | None]:
        """The index opened for binary reading, or ``None`` if it does not exist yet."""
        with contextlib.ExitStack() as stack:
            try:
                handle: BinaryIO | None = stack.enter_context(open(self.path, "rb"))
            except FileNotFoundError:
                handle = None
            yield handle

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """Serialise writers across threads and processes (released on close), and sweep
        the temporary files of rewrites that were killed before their rename."""
        with writer_lock(self.path.parent, self.path.name + ".lock", (temp_prefix(self.path),)):
            yield

    def _partition_of(self, line: bytes, line_number: int) -> str:
        """The partition of a complete line read in full; refuses a line cut short."""
        try:
            if not line.rstrip().endswith(b"}"):
                raise _BadLine("line is cut short: it does not end with '}'")
            return _line_partition(line)
        except _BadLine as exc:
            raise IndexCorruptError(self.path, line_number, str(exc)) from exc

    def _partition_at(self, handle: BinaryIO, start: int, end: int) -> str:
        """The partition of the line at ``[start, end)``, reading only its prefix if it can."""
        prefix = _read_span(handle, start, min(end, start + _PREFIX_SIZE))
        return _prefix_partition(prefix) or self._parse_at(handle, start, end)["partition"]

    def _parse_at(self, handle: BinaryIO, start: int, end: int) -> dict[str, Any]:
        """Parse the line at ``[start, end)``; on failure, name its line number."""
        try:
            return _parse_line(_read_span(handle, start, end))
        except _BadLine as exc:
            line_number = _line_number_at(handle, start)
            raise IndexCorruptError(self.path, line_number, str(exc)) from exc

    def _last_line_span(self, handle: BinaryIO) -> tuple[int, int] | None:
        """``(start, end)`` of the last complete line without its ``\\n``, or ``None``."""
        end = _complete_end(handle)
        if end == 0:
            return None
        return _rfind_newline(handle, end - 1) + 1, end - 1

    def _binary_search(self, handle: BinaryIO, partition: str, end: int) -> dict[str, Any] | None:
        """Find ``partition`` among the complete lines in ``[0, end)``.

        Invariant: ``low`` is a line start, ``high`` a line start or ``end``, and the
        wanted line, if present, starts in ``[low, high)``. Each probe reads the line
        around the midpoint, then discards the half that cannot hold the partition.
        """
        low, high = 0, end
        while low < high:
            middle = (low + high) // 2
            start = _rfind_newline(handle, middle) + 1  # start of the line holding `middle`
            newline = _find_newline(handle, middle, end)
            found = self._partition_at(handle, start, newline)
            if found == partition:
                return self._parse_at(handle, start, newline)
            if found < partition:
                low = newline + 1
            else:
                high = start
        return None

    def _try_append(self, partition: str, line: bytes) -> bool:
        """Append ``line`` if ``partition`` is newer than the last line; else ``False``.

        Reads only the end of the file. A partial line left by an interrupted append is
        truncated away first.
        """
        with storage_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            with open(fd, "r+b", buffering=0) as handle:
                last = self._last_line_span(handle)
                if last is not None and partition <= self._partition_at(handle, *last):
                    return False
                end = last[1] + 1 if last is not None else 0
                if handle.seek(0, os.SEEK_END) != end:
                    handle.truncate(end)
                handle.seek(end)
                try:
                    _write_all(handle, line)
                    os.fsync(handle.fileno())
                except OSError:  # a full disk: leave no partial line behind if we can
                    with contextlib.suppress(OSError):
                        handle.truncate(end)
                    raise
            if created:
                fsync_dir(self.path.parent)
        return True

    def repair_tail(self) -> bool:
        """Drop a trailing partial line (an append killed midway); True if there was one.
        Readers already ignore it and the next upsert truncates it: this is for ``verify
        --repair``."""
        with self._writer_lock(), storage_errors(self.path):
            if not self.path.exists():
                return False
            with open(self.path, "r+b", buffering=0) as handle:
                last = self._last_line_span(handle)
                end = last[1] + 1 if last is not None else 0
                if handle.seek(0, os.SEEK_END) == end:
                    return False
                handle.truncate(end)
                os.fsync(handle.fileno())
        return True

    def remove_temp_files(self) -> list[Path]:
        """Remove :meth:`temp_files` under the writers' lock (entering it sweeps them);
        returns what was there."""
        found = self.temp_files()
        if found:
            with self._writer_lock():
                pass
        return found

    def temp_files(self) -> list[Path]:
        """Temporary files of rewrites killed before their rename (the next writer, or
        ``verify --repair``, removes them)."""
        return temp_files(self.path.parent, (temp_prefix(self.path),))

    def _rewrite(self, replacements: Mapping[str, bytes] | Iterator[tuple[str, bytes]]) -> bool:
        """Stream the index into a new file with ``replacements`` (a mapping, or an
        iterator of ``(partition, line)`` in ascending order, consumed as it goes) merged in,
        then atomically replace it. Returns whether anything
        changed.

        Raises ``IndexCorruptError`` (leaving the index untouched) on a line that has no
        readable partition, is cut short, or breaks the sort order. A trailing partial
        line (an interrupted append) is dropped.
        """
        if isinstance(replacements, Mapping):
            replacements = iter(sorted(replacements.items()))
        pending = _Peekable(replacements)
        changed = pending.peek() is not None
        try:
            with self._open_for_reading() as old, atomic_replace(self.path) as out:
                old_lines = _iter_complete_lines(old) if old is not None else iter(())
                previous: str | None = None
                for line_number, line in old_lines:
                    partition = self._partition_of(line, line_number)
                    if previous is not None and partition <= previous:
                        reason = "duplicate partition" if partition == previous else "out of order"
                        raise IndexCorruptError(
                            self.path, line_number, f"{reason}: {partition} after {previous}"
                        )
                    previous = partition
                    while (head := pending.peek()) is not None and head[0] < partition:
                        out.write(next(pending)[1])
                    if (head := pending.peek()) is not None and head[0] == partition:
                        out.write(next(pending)[1])
                    else:
                        out.write(line)
                for _, new_line in pending:
                    out.write(new_line)
                if not changed:
                    raise _Unchanged
        except _Unchanged:
            return False
        return True
